"""Shared fixtures: a temporary copy of the project, the demo data, and the fake Flywheel CLI."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deidpipe.profile import generate_profile
from deidpipe.synthetic import FAKE_IDENTIFIERS

REPO = Path(__file__).resolve().parent.parent
FAKE_FW = REPO / "tests" / "fake_fw" / "fw"
PROJECT_FILES = ("Snakefile", "config.yaml", "sessions.tsv", "workflow", "profiles", "demo")


# Modules with tests that use the real Flywheel CLIs' environments.
REAL_CLI_TESTS = ("test_flywheel_cli.py", "test_staged_vs_flywheel_migration.py")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start installing the real Flywheel CLIs (tests/real_fw) in the background as soon as a
    test that needs them is collected, so that the installs overlap the tests before it."""
    if any(item.path.name in REAL_CLI_TESTS for item in session.items):
        from real_fw import start_installing

        start_installing()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project with the demo, as a user would have after cloning."""
    target = tmp_path / "project"
    target.mkdir()
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, target / name)
    return target


@pytest.fixture
def profile_v1(tmp_path: Path) -> Path:
    """The shipped default profile, generated."""
    path = tmp_path / "PennBrainScienceCenter.yaml"
    path.write_text(generate_profile(REPO / "profiles" / "PennBrainScienceCenter"))
    return path


@pytest.fixture
def fake_fw_log(tmp_path: Path) -> Path:
    return tmp_path / "fw-calls.jsonl"


def fw_calls(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def run_snakemake(workdir: Path, *args: str, env: dict[str, str] | None = None,
                  timeout: int = 300) -> subprocess.CompletedProcess:
    """Run snakemake as a user would, in ``workdir``; output captured as text.

    Every end-to-end run also checks that the source tree (``demo/``) is byte for byte the
    same afterwards: the pipeline only ever reads it.
    """
    source_before = tree_digest(workdir / "demo")
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args],
        cwd=workdir, env={**os.environ, **(env or {})}, capture_output=True, text=True,
        timeout=timeout, check=False)
    assert tree_digest(workdir / "demo") == source_before, "the run changed the source tree"
    return result


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file below a folder, by relative path."""
    return {path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def identifier_needles() -> list[bytes]:
    """The planted identifiers in the forms someone might write them, as bytes to grep for."""
    needles = set()
    for value in FAKE_IDENTIFIERS.values():
        needles.add(value)
        needles.update(part for part in value.split("^") if len(part) > 3)
    return sorted(needle.encode() for needle in needles)


def files_containing_identifiers(folder: Path) -> list[str]:
    """Files below ``folder`` that hold any planted identifier."""
    hits = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path.relative_to(folder)}: {needle.decode()}"
                     for needle in identifier_needles() if needle in data]
    return hits


def pytest_terminal_summary(terminalreporter) -> None:
    """Print the planted-leak catch rate and the clean controls' false-fail rate."""
    import test_planted_leaks as planted_tests

    caught, controls = planted_tests.CATCH_RESULTS, planted_tests.CONTROL_RESULTS
    if not caught and not controls:
        return
    terminalreporter.section("planted leaks")
    if caught:
        terminalreporter.write_line(
            f"catch rate: {sum(caught.values())}/{len(caught)} planted kinds flagged with the "
            f"right check and severity ({100 * sum(caught.values()) / len(caught):.0f}%)")
        for kind, found in caught.items():
            if not found:
                terminalreporter.write_line(f"  missed: {kind}")
    if controls:
        fails = sum(status == "fail" for status in controls.values())
        terminalreporter.write_line(
            f"false-fail rate: {fails}/{len(controls)} clean control sessions failed "
            f"({', '.join(f'{kind}: {status}' for kind, status in controls.items())})")


def identifiers_in_run_outputs(project: Path) -> list[str]:
    """Planted identifiers in any file of the project folder outside the source (demo/),
    staging/ and an opt-in PHI log: results, logs, ledger, Snakemake's own records."""
    hits = []
    for path in sorted(project.rglob("*")):
        relative = path.relative_to(project)
        # The project's own files (the code that plants the identifiers, the sources) are not
        # outputs of the run.
        if not path.is_file() or relative.parts[0] in (*PROJECT_FILES, "staging", "phi-log"):
            continue
        data = path.read_bytes()
        hits += [f"{relative}: {needle.decode()}" for needle in identifier_needles()
                 if needle in data]
    return hits


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A temporary folder others may enter (tests/conftest's run_unprivileged runs as another
    user when the tests run as root); pytest's own temporary folders are owner-only."""
    folder = Path(tempfile.mkdtemp(prefix="deidpipe-open-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for path in [folder, *folder.rglob("*")]:
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(folder)


def run_unprivileged(code: str, *args: str) -> subprocess.CompletedProcess:
    """Run Python ``code`` so that file permissions apply to it: as it is when the tests do not
    run as root, else as the user 'nobody' (setpriv), since root reads any file. Skips the test,
    saying why, where neither is possible."""
    command = [sys.executable, "-c", code, *args]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: file permissions cannot be tested")
        command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
                   *command]
        probe = subprocess.run([*command[:5], sys.executable, "-c", "import deidpipe"],
                               capture_output=True, text=True, check=False, timeout=120)
        if probe.returncode != 0:
            pytest.skip("running as root, and the user 'nobody' cannot run this project's Python "
                        f"here: {probe.stderr.strip()[-300:]}")
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
