"""A throwaway executor, registered in this one file: it records what it is asked to submit and runs
it as the local executor does. The pipeline, the dry run, status and retry must work through it
without any other file knowing its name (tests/integration/test_tools.py)."""
from oasis_dcgan.launch import executors


@executors.register
class RecordingExecutor(executors.Local):
    name, help = "recorder", "records each submission, then runs it through submitit locally"
    submitted: list = []
    requeued: list = []

    def submit(self, cfg, folder, role, name, fn, args, array=0, after=None):
        self.submitted.append((name, role, array, after))
        return super().submit(cfg, folder, role, name, Registering(fn), args, array, after)

    def script(self, cfg, folder, role, name, array=0, after=None):
        return f"#recorder {name} role={role} tasks={array}"

    def this_job(self):
        return "recorded-7", 0

    def job_state(self, job_id):
        return "RUNNING"

    def requeue(self, job_id):
        self.requeued.append(job_id)


class Registering:
    """A job's function that brings this executor along: unpickling it in the job imports this module,
    which registers the executor before the job reads a config naming it."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)
