"""Train the OASIS brain DCGAN (the reference project's model) as a Slurm job suite."""
__version__ = "0.1.0"
