"""Train the OASIS brain DCGAN (the seed project's model) as a Slurm job suite."""
import logging

__version__ = "0.1.0"

# The suite's lines go to its own handlers (logs.py) only: a root handler that a dependency
# installs would print each of them a second time in another format.
logging.getLogger(__name__).propagate = False
