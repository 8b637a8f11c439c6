"""The launch layer: the scheduler's view (environment), executors, the job callables, the chained
pipeline, status and collect. The only code that knows about Slurm and submitit."""
