"""`python -m jobs.postprocess ...`: the postprocess job's entry point (same as `oasis-dcgan postprocess`)."""
import sys

from oasis_dcgan.cli import main

if __name__ == "__main__":
    sys.exit(main(["postprocess", *sys.argv[1:]]))
