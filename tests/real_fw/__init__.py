"""The real Flywheel CLIs (flywheel-cli from PyPI), each in a virtual environment of its own,
made once and kept in the machine's cache folder (``$DEIDPIPE_TEST_CACHE``, else
``$XDG_CACHE_HOME/deidpipe-tests``, else ``~/.cache/deidpipe-tests``): installing one takes a
minute or two. ``start_installing`` begins both in the background when the session collects
a test that needs them, so that the installs overlap the other tests.

The CLIs cannot reach a Flywheel server here; what they do without one (parse our commands,
refuse to upload without a login) is what the tests check. flywheel-cli 17 also ships
flywheel-migration, the engine inside `fw import --profile`: the tests compare staging's
output with what it writes for the same profile.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

VERSIONS = {"17": "17.8.2", "18": "18.5.1"}
PARSE_PROBE = Path(__file__).resolve().parent / "parse_probe.py"
FWMIG_PROBE = Path(__file__).resolve().parent / "fwmig_probe.py"
INSTALL_TIMEOUT = 900  # seconds


def cache_folder() -> Path:
    configured = os.environ.get("DEIDPIPE_TEST_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deidpipe-tests"


@dataclass
class Installed:
    """A CLI's environment, or why there is none (``problem``)."""

    version: str
    venv: Path | None
    problem: str = ""

    @property
    def fw(self) -> Path:
        assert self.venv is not None
        return self.venv / "bin" / "fw"

    @property
    def python(self) -> Path:
        assert self.venv is not None
        return self.venv / "bin" / "python"


_results: dict[str, Installed] = {}
_threads: dict[str, threading.Thread] = {}
_lock = threading.Lock()


def _install(series: str) -> Installed:
    version = VERSIONS[series]
    venv = cache_folder() / f"flywheel-cli-{version}"
    marker = venv / "installed.json"  # written last: a venv without it is half made
    venv.parent.mkdir(parents=True, exist_ok=True)
    # One install at a time per version, across processes (a second test run waits).
    with open(venv.parent / f".flywheel-cli-{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file():
            return Installed(version, venv)
        # The installs run in threads while tests change the environment (monkeypatch): each
        # call gets a copy of it, not the live environment a starting process reads from.
        error: Exception | None = None
        for _attempt in range(3):
            shutil.rmtree(venv, ignore_errors=True)
            try:
                subprocess.run([sys.executable, "-m", "venv", venv], check=True,
                               capture_output=True, timeout=INSTALL_TIMEOUT,
                               env=dict(os.environ))
                pip = subprocess.run([venv / "bin" / "python", "-m", "pip", "install",
                                      "--quiet", "--disable-pip-version-check",
                                      f"flywheel-cli=={version}"], capture_output=True,
                                     text=True, timeout=INSTALL_TIMEOUT, env=dict(os.environ))
                break
            except (OSError, subprocess.SubprocessError) as failure:
                error = failure
        else:
            return Installed(version, None, f"flywheel-cli=={version} could not be installed: "
                             f"{error}")
        if pip.returncode != 0:
            last = (pip.stderr or pip.stdout).strip().splitlines()[-3:]
            return Installed(version, None, f"pip could not install flywheel-cli=={version} "
                             f"(no network to PyPI?): {' / '.join(last)}")
        marker.write_text(json.dumps({"flywheel-cli": version}))
        return Installed(version, venv)


def start_installing() -> None:
    """Begin installing every CLI in the background (each at most once per test session)."""
    with _lock:
        for series in VERSIONS:
            if series not in _threads:
                def run(series: str = series) -> None:
                    _results[series] = _install(series)
                _threads[series] = threading.Thread(target=run, daemon=True)
                _threads[series].start()


def installed(series: str) -> Installed:
    """The CLI of ``series`` ('17' or '18'), installed if need be (waits for the install)."""
    start_installing()
    _threads[series].join()
    return _results[series]


def parse_with_real_cli(cli: Installed, commands: list[list[str]], legacy: bool,
                        home: Path) -> list[dict]:
    """What the CLI's own argument parser makes of each argument list (without the 'fw')."""
    env = {**os.environ, "HOME": str(home)}
    env.pop("FLYWHEEL_CLI_LEGACY", None)
    if legacy:
        env["FLYWHEEL_CLI_LEGACY"] = "true"
    result = subprocess.run([cli.python, PARSE_PROBE], input=json.dumps(commands),
                            capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def deidentify_with_flywheel_migration(cli: Installed, profile: Path, source: Path,
                                       names: list[str], target: Path) -> dict[str, object]:
    """De-identify ``names`` (below ``source``) with the flywheel-migration of ``cli``'s
    environment into ``target``: each name's written files (below ``target``), or an error."""
    result = subprocess.run([cli.python, FWMIG_PROBE, profile, source, target],
                            input=json.dumps(names), capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)
