"""`python -m jobs.preprocess ...`: the preprocess job's entry point (same as `oasis-dcgan preprocess`)."""
import sys

from oasis_dcgan.cli import main

if __name__ == "__main__":
    sys.exit(main(["preprocess", *sys.argv[1:]]))
