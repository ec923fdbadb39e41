"""flywheel-migration, the de-identification engine inside ``fw import``, in a virtual
environment of its own (it pins pandas 2; this project uses pandas 3), driven by
bench/fwmig_driver.py: one process, one core, every file through ``DeIdProfile.process_file``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from deidbench.commands import BENCH, Command

FWMIG_REQUIREMENT = "flywheel-migration==13.10.11"
FWMIG_DRIVER = BENCH / "fwmig_driver.py"


def fwmig_python(venv: Path, say: Callable[[str], None]) -> Path:
    """The venv's Python, the venv made with flywheel-migration in it on first use."""
    python = venv / "bin" / "python"
    if python.exists():
        check = subprocess.run([python, "-c", "import flywheel_migration"], capture_output=True,
                               check=False)
        if check.returncode == 0:
            return python
    say(f"creating {venv} with {FWMIG_REQUIREMENT} (once)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", FWMIG_REQUIREMENT], check=True)
    return python


def fwmig_versions(python: Path) -> dict[str, str]:
    code = ("import json; from importlib.metadata import version as v; print(json.dumps("
            "{n: v(n) for n in ('flywheel-migration', 'fw-file', 'pydicom', 'pandas')}))")
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def fwmig_command(python: Path, profile: Path, source_root: Path, target_root: Path) -> Command:
    """De-identify every session below ``source_root`` into ``target_root``."""
    return [python, FWMIG_DRIVER, profile, source_root, target_root]


def fwmig_start_up_seconds(log: Path) -> float:
    """Of the driver's time, what went to imports and loading the profile (its last line)."""
    report = json.loads(log.read_text().strip().splitlines()[-1])
    return float(report["seconds_total"] - report["seconds_files"])
