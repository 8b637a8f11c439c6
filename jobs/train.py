"""`python -m jobs.train ...`: the train job's entry point (same as `oasis-dcgan train`)."""
import sys

from oasis_dcgan.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
