"""Every error the suite raises on purpose, in two kinds: the user's to fix, or worth another try.

A `UserError` (a config, the data, a checkpoint, a run another job holds, a file to collect or
evaluate) would be met again by the same job: the command prints one line naming the file and
what is wrong, exits with USER_EXIT, and the retry step never requeues it. Everything else is
retryable: a `RetryableError` (a peer that did not answer, a full disk) is one line and exit 1,
and anything unforeseen keeps its traceback. The CLI and the retry step decide from here alone.
"""
from __future__ import annotations

USER_EXIT = 2       # fix the input, then run again
RETRYABLE_EXIT = 1  # a known fault that another attempt may not meet
LEASE_LOST_EXIT = 3  # another job took the run's lock: this one stopped writing; never requeued


class UserError(Exception):
    """The input is wrong: one line naming the file (or key) and the fault; never retried."""


class RetryableError(Exception):
    """A known fault of the machine, not of the input: one line; a requeue may get past it."""


class ConfigError(UserError, ValueError):
    """A config key, file or command-line value that is not allowed."""


class PartitionError(ConfigError):
    """A Slurm partition that cannot hold what the job asks for."""


class DataError(UserError, ValueError):
    """A source release or packed dataset that is missing, malformed or fails its checksums."""


class CheckpointError(UserError):
    """No checkpoint of this run can be resumed with this config."""


class RunLockError(UserError):
    """Another live job holds the run directory."""


class LeaseLostError(RunLockError):
    """This job held the run's lock and lost it (suspended or cut off past the takeover limit):
    it stops writing into the run at once, and leaves the run's state to the new holder."""


class PlantedLinkError(UserError):
    """A symlink where the suite writes or reads a file of its own: never followed."""


class RunDirError(UserError, FileNotFoundError):
    """A path that is not a run directory, or one with nothing yet to report."""


class BadFileError(UserError, ValueError):
    """A file the suite reads back (a record, a manifest, a note) that is not valid JSON."""


class CollectError(UserError):
    """Results that cannot be copied off scratch storage as asked."""


class MetricError(UserError, ValueError):
    """A metric's input that cannot be scored (too few images, another resolution)."""


class FeatureError(MetricError):
    """A feature extractor's input or weights that cannot be used."""


class ImagesError(UserError, ValueError):
    """An image file or folder given to `evaluate` that cannot be read as images."""


class RendezvousError(RetryableError):
    """The ranks did not find each other in time."""


class StorageError(RetryableError, OSError):
    """A write the run needs failed (a full disk, a quota, a read-only mount): one line that says
    which path, what failed, what is intact and how to go on."""


def is_user_error(e: BaseException) -> bool:
    """True for what the same job would meet again. A path the user named that is missing or
    unreadable counts, wherever the OS raised it."""
    return isinstance(e, (UserError, FileNotFoundError, PermissionError)) and not isinstance(e, RetryableError)


def exit_code(e: BaseException) -> int | None:
    """The CLI's exit code for an error it prints as one line; None for one that keeps its traceback."""
    if isinstance(e, LeaseLostError):
        return LEASE_LOST_EXIT
    if is_user_error(e):
        return USER_EXIT
    return RETRYABLE_EXIT if isinstance(e, RetryableError) else None
