"""The preprocess job: pack an OASIS source into verified HDF5 shards.

    python -m jobs.preprocess SRC OUT [--resolution 256] [--tasks N --executor slurm] [--skip-bad]

Reads the OASIS PNG release, raw OASIS-1 volumes or any image folder (oasis_dcgan/prep/);
writes OUT/{split}-NNNNN-of-NNNNN.h5 and OUT/manifest.json. Under a plain sbatch array each
task passes --task/--tasks/--packing and a last step --seal --packing (slurm/preprocess.sbatch).
Same as `oasis-dcgan preprocess`.
"""
import sys

from oasis_dcgan.cli import main

if __name__ == "__main__":
    sys.exit(main(["preprocess", *sys.argv[1:]]))
