"""Train the seed's DCGAN on OASIS brain MRI slices as a Slurm job suite."""
__version__ = "0.1.0"
