"""Run logs for people and machines: log.txt, stats.jsonl, tick lines and a progress bar."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from . import fsutil, rundir


LOGGER = "oasis_dcgan"  # every module's logger is a child of this one (the package's own name)


def line(record: logging.LogRecord) -> str:
    """One record as the suite prints it: dated, and a warning says so."""
    level = f"{record.levelname}: " if record.levelno >= logging.WARNING else ""
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(record.created))} {level}{record.getMessage()}"


class Console(logging.Handler):
    """The suite's lines on stdout: a terminal, or a batch job's log. The CLI and the jobs attach
    one (`to_console`); a library caller that attaches none sees warnings only (on stderr)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(line(record), flush=True)


def to_console(level: int = logging.INFO) -> Console:
    """Attach the console handler once (at `level`), and return it."""
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.INFO)
    handler = next((h for h in logger.handlers if isinstance(h, Console)), None) or Console()
    handler.setLevel(level)
    if handler not in logger.handlers:
        logger.addHandler(handler)
    return handler


class RunLog(logging.Handler):
    """Rank 0's handler for the suite's loggers: each record a dated line in RUN_DIR/log.txt and,
    with `echo` where no console handler prints them already, on stdout (the Slurm log). Other
    ranks attach none: their progress is rank 0's."""

    def __init__(self, run: rundir.RunDir, echo: bool = True):
        super().__init__(logging.INFO)
        self.echo = echo
        self.run = run
        self.path = self.run.log
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = fsutil.open_append(self.path)

    def emit(self, record: logging.LogRecord) -> None:
        # (Called under the handler's re-entrant lock: the loop, the thread that publishes
        # epochs and a signal handler that interrupted either all log.)
        text = line(record)
        if self.echo:
            print(text, flush=True)
        if self._f is not None and self.run.lease is not None and not self.run.lease.valid():
            # The run is another job's now: this job's last lines go to its own log only.
            self._f.close()
            self._f = None
        if self._f is None:
            if not self.echo:
                print(text, file=sys.stderr, flush=True)
            return
        try:
            self._f.write(text + "\n")
        except OSError as e:  # raised, not swallowed: a run must not go on without its log
            raise fsutil.storage_error(self.path, "append to the run's log", e,
                                       "the lines before it, the checkpoints and stats are intact") from e

    def attach(self) -> RunLog:
        logger = logging.getLogger(LOGGER)
        logger.setLevel(logging.INFO)
        self.echo = self.echo and not any(isinstance(h, Console) for h in logger.handlers)
        logger.addHandler(self)
        return self

    def close(self) -> None:
        logging.getLogger(LOGGER).removeHandler(self)
        if self._f is not None:  # None: closed when the run was lost
            with contextlib.suppress(OSError):  # a full disk was reported when the line failed
                self._f.close()
        super().close()


class Stats:
    """stats.jsonl: one JSON object a line, flushed at once so `status` and `tail -f` see it."""

    def __init__(self, path: str | os.PathLike, guard=None):
        self.path = Path(path)
        self._f = fsutil.open_append(self.path)
        self._guard = guard  # the run's fence (rundir.RunDir.guard): raises once this job lost the run
        self._lock = threading.RLock()  # re-entered by a signal handler that interrupted a write

    def write(self, **record) -> None:
        record.setdefault("time", time.time())
        if self._guard:
            self._guard()
        with self._lock:  # the training loop and the thread that publishes epochs both write
            try:
                self._f.write(json.dumps(record) + "\n")
                self._f.flush()
            except OSError as e:
                raise self._error(e) from e

    def _error(self, e: OSError) -> fsutil.StorageError:
        return fsutil.storage_error(self.path, "append a line", e, "the lines before it are intact (a torn last "
                                    "line is dropped on resume)")

    def sync(self) -> None:
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError as e:
            raise self._error(e) from e

    def close(self) -> None:
        self._f.close()

    @staticmethod
    def truncate_after(path: str | os.PathLike, global_step: int, epoch: int) -> int:
        """Drop lines written after the checkpoint a run resumes from. Returns lines dropped.

        A run killed between logging and checkpointing would otherwise log that stretch twice.
        """
        rows = fsutil.read_jsonl(path)
        keep = [r for r in rows if not (r.get("global_step", 0) > global_step
                                        or (r.get("kind") == "epoch" and r.get("epoch", 0) > epoch))]
        size = Path(path).stat().st_size if Path(path).is_file() else 0
        text = "".join(json.dumps(r) + "\n" for r in keep)
        if len(keep) < len(rows) or len(text.encode("utf-8")) != size:  # late lines, or a torn last one
            fsutil.write_text(path, text)
        return len(rows) - len(keep)


class Progress:
    """A one-line bar with ETA on a terminal; nothing otherwise (tick lines cover batch logs)."""

    def __init__(self, total: int, done: int = 0, stream=None, unit: str = ""):
        self.stream = stream or sys.stdout
        self.active = self.stream.isatty()
        self.total, self.start_done, self.unit = total, done, unit
        self.t0 = time.monotonic()
        self.last_draw = 0.0

    def due(self, every_s: float = 0.25) -> bool:
        """Whether a redraw is worth its cost: what it shows may wait for the device to finish a step."""
        return self.active and time.monotonic() - self.last_draw >= every_s

    def update(self, done: int, text: str = "") -> None:
        if not self.active:
            return
        self.last_draw = time.monotonic()
        rate = (done - self.start_done) / max(time.monotonic() - self.t0, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        width = 30
        fill = int(width * done / max(self.total, 1))
        self.stream.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {done}/{self.total} {self.unit} "
                          f"ETA {format_seconds(eta)} {text}   ")
        self.stream.flush()

    def close(self) -> None:
        if self.active:
            self.stream.write("\n")
            self.stream.flush()


def format_seconds(s: float) -> str:
    if s != s or s == float("inf"):
        return "?"
    s = int(s)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"
