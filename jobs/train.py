"""The train job: the DCGAN with Horovod over every rank of the job, resuming from RUN_DIR.

    python -m jobs.train DATASET RUN_DIR [--epochs 50] [--ranks N] [--executor auto|local|slurm|inprocess]

Started by srun (slurm/train.sbatch), each rank trains in place; otherwise it submits the
ranks through submitit. The Trainer is oasis_dcgan/training/trainer.py; preemption and
rendezvous are oasis_dcgan/launch/. Same as `oasis-dcgan train`.
"""
import sys

from oasis_dcgan.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
