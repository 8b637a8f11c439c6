"""The postprocess job: the reference metric per epoch, the checks beside it, figures, GIF, report.

    python -m jobs.postprocess RUN_DIR [--dataset DIR] [--batches 50]

Writes RUN_DIR/report/ (oasis_dcgan/post/); works on a finished run or one still training.
Same as `oasis-dcgan postprocess`.
"""
import sys

from oasis_dcgan.cli import main

if __name__ == "__main__":
    sys.exit(main(["postprocess", *sys.argv[1:]]))
