"""What a run trains on, and how: its dataset checked, the images and steps of an epoch at this
world size, the learning rate for its ranks, and the stream of images each rank reads."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import Config, TrainConfig
from ..errors import DataError
from ..prep.manifest import check_before_training, load_manifest, manifest_hash
from ..prep.reader import ShardReader, Stream, epoch_budget, steps_left
from . import model, resume


@dataclass(frozen=True)
class Plan:
    train: TrainConfig
    world_size: int
    dataset_hash: str
    n_train: int   # the training split's images
    budget: int    # the images a new epoch trains on (an epoch in progress keeps the budget it started with)
    lr: float      # train.lr scaled for the world size

    @classmethod
    def make(cls, cfg: Config, world_size: int) -> Plan:
        """Check the dataset (every rank does: they read the same files and reach the same
        verdict, so none is left waiting in a collective for a rank that stopped) and plan on it."""
        t, dataset = cfg.train, cfg.data.dataset
        check_before_training(dataset, full=t.verify_data)
        resume.take_dataset_identity(cfg, load_manifest(dataset))
        n_train = len(ShardReader(dataset, "train"))
        budget = epoch_budget(n_train, t.batch_size, t.max_steps_per_epoch, world_size)
        if budget == 0:
            raise DataError(f"{dataset}: {n_train} training images cannot fill one batch of {t.batch_size}")
        return cls(t, world_size, manifest_hash(dataset), n_train, budget, model.lr_for(cfg, world_size))

    @property
    def global_batch(self) -> int:
        return self.train.batch_size * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return steps_left(self.budget, 0, self.train.batch_size, self.world_size)

    @property
    def total_images(self) -> int:
        return self.budget * self.train.epochs

    def steps_to_epoch_end(self, epoch_images: int, images_in_epoch: int) -> int:
        """Global steps to the end of an epoch of `epoch_images` (0: a new one's) from an image."""
        return steps_left(epoch_images or self.budget, images_in_epoch, self.train.batch_size, self.world_size)

    def stream(self, rank: int, epoch: int, counters: dict, first_rng_seed: int) -> Stream:
        """What `rank` reads from the epoch under way (its counters say where it is) to the end."""
        t = self.train
        return Stream(t.seed, t.batch_size, epoch, rank, self.world_size, epochs=max(t.epochs - epoch, 1),
                      start_image=counters["images_in_epoch"], budget=counters["epoch_images"],
                      later_budget=self.budget, first_rng_seed=first_rng_seed)
