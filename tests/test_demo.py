"""The shipped demo is what `deidpipe make-demo` writes (README, "Development")."""

import subprocess
import sys

from conftest import REPO, tree_digest


def test_make_demo_rebuilds_the_shipped_demo_byte_for_byte(tmp_path):
    target = tmp_path / "dicom"
    result = subprocess.run([sys.executable, "-m", "deidpipe", "make-demo", str(target)],
                            capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr
    shipped = tree_digest(REPO / "demo" / "dicom")
    assert len(shipped) >= 10  # the three sessions' files
    assert tree_digest(target) == shipped
