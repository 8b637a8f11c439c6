"""Atomic writes: published files take the mode the umask allows, as open() would give them."""

import stat
import subprocess
import sys

import pytest

from tests.conftest import REPO

WRITER = """
import os, sys
os.umask(int(sys.argv[2], 8))
from oasis_dcgan import fsutil
d = sys.argv[1]
fsutil.write_json(os.path.join(d, "a.json"), {"x": 1})
fsutil.write_bytes(os.path.join(d, "sub", "b.bin"), b"x")
with open(os.path.join(d, "plain.txt"), "w") as f:
    f.write("what open() makes")
print(oct(fsutil.umask()))
"""


@pytest.mark.parametrize("mask, mode", [("022", 0o644), ("002", 0o664), ("077", 0o600)])
def test_published_files_take_the_mode_the_umask_allows(tmp_path, mask, mode):
    r = subprocess.run([sys.executable, "-c", WRITER, str(tmp_path), mask], cwd=REPO, capture_output=True,
                       text=True, check=True)
    assert r.stdout.strip() == oct(int(mask, 8)), "the umask is read as it was set"
    for name in ("a.json", "sub/b.bin", "plain.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    assert not list(tmp_path.rglob(".*.tmp")), "no temp left behind"
