"""Faults: a killed run, two runs at once, a failing disk. Whatever happens, the next run
finishes the work, nothing is uploaded twice or half-verified, and the source is untouched."""

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import FAKE_FW, identifiers_in_run_outputs, run_snakemake, tree_digest
from deidpipe.synthetic import SeriesSpec, SessionSpec, build_session

# Warned sessions upload without approval here: these tests are about interrupted runs.
UPLOAD = ["--config", "upload=true", f"fw={FAKE_FW}", "upload_warned=true"]


def add_big_session(project: Path, files: int = 240) -> None:
    """A session large enough that staging and verification take a moment to interrupt."""
    build_session(SessionSpec("big", [SeriesSpec("MR_small.dcm", "T1w", files // 2),
                                      SeriesSpec("CT_small.dcm", "CT", files // 2)]),
                  project / "demo" / "big")
    with open(project / "sessions.tsv", "a", encoding="utf-8") as sheet:
        sheet.write("sub-big\tses-01\tdemo/big\tlarge session\n")


def fake_fw_env(project: Path, seconds: float = 0) -> dict[str, str]:
    return {"FAKE_FW_LOG": str(project / "fw-calls.jsonl"),
            "FAKE_FW_DONE_LOG": str(project / "fw-done.txt"),
            "FAKE_FW_SECONDS": str(seconds)}


def unfinished_jobs(project: Path) -> list[tuple[str, str]]:
    """(rule, output) of each job that the latest Snakemake log shows started and not
    finished."""
    logs = sorted((project / ".snakemake" / "log").glob("*.snakemake.log"))
    if not logs:
        return []
    started: dict[str, tuple[str, str]] = {}
    finished: set[str] = set()
    rule = output = ""
    for line in logs[-1].read_text(errors="replace").splitlines():
        if match := re.fullmatch(r"(?:local)?rule (\w+):", line):
            rule, output = match.group(1), ""
        elif match := re.fullmatch(r"    output: (.*)", line):
            output = match.group(1)
        elif (match := re.fullmatch(r"    jobid: (\d+)", line)) and rule:
            started[match.group(1)] = (rule, output)
            rule = ""
        elif match := re.match(r"Finished jobid: (\d+)", line):
            finished.add(match.group(1))
    return [job for jobid, job in started.items() if jobid not in finished]


def upload_under_way(project: Path) -> bool:
    """The fake CLI was called for a session and has not finished it yet."""
    calls, done = project / "fw-calls.jsonl", project / "fw-done.txt"
    called = len(calls.read_text().splitlines()) if calls.exists() else 0
    finished = len(done.read_text().split()) if done.exists() else 0
    return called > finished and any(rule == "upload" for rule, _ in unfinished_jobs(project))


def big_session_job_under_way(rule: str) -> Callable[[Path], bool]:
    def under_way(project: Path) -> bool:
        jobs = unfinished_jobs(project)
        if not any(job == rule and "sub-big" in output for job, output in jobs):
            return False
        # Staging has begun writing (its temporary folder is there), not only been scheduled.
        return rule != "stage" or any(project.glob("staging/*/*/sub-big/.ses-01.staging-*"))
    return under_way


# Moments to kill a run at, each seen happening (not guessed from a time).
MOMENTS = {"while staging": big_session_job_under_way("stage"),
           "while verifying": big_session_job_under_way("verify"),
           "while uploading": upload_under_way}


def kill_run_when(project: Path, under_way: Callable[[Path], bool], env: dict[str, str],
                  timeout: float = 180) -> None:
    """Start Snakemake and, once ``under_way`` holds, SIGKILL it with all its jobs, as a power
    loss or the OOM killer would; then check that work really was cut off."""
    process = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", "2", *UPLOAD], cwd=project,
        env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while not under_way(project):
            assert process.poll() is None, "the run ended before the moment to kill it came"
            assert time.monotonic() < deadline, "the moment to kill the run never came"
            time.sleep(0.02)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)
    assert under_way(project), "the work was finished before the kill reached it"
    assert list((project / ".snakemake" / "locks").glob("*")), "the killed run left no lock"


def leftovers(project: Path) -> list[str]:
    """Temporary files and folders a finished run must not leave behind."""
    return sorted(path.relative_to(project).as_posix()
                  for folder in ("staging", "results") if (project / folder).exists()
                  for path in (project / folder).rglob("*")
                  if ".staging-" in path.name or ".old-" in path.name
                  or path.name.endswith(".tmp"))


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_a_killed_run_is_finished_by_the_next_without_repeats(project, moment):
    add_big_session(project)
    source_before = tree_digest(project / "demo")
    env = fake_fw_env(project, seconds=1.0)
    kill_run_when(project, MOMENTS[moment], env)
    finished = run_snakemake(project, *UPLOAD, env=env, timeout=600)
    assert finished.returncode == 0, finished.stderr
    assert "Traceback" not in finished.stderr
    # The killed run's lock was taken over, and the coordinator told so.
    assert "was killed before it finished; its lock was removed" in finished.stderr
    assert unfinished_jobs(project) == []
    statuses = {}
    for subject in ("sub-001", "sub-002", "sub-003", "sub-big"):
        report = json.loads((project / f"results/verify/demo/deid-demo/{subject}/ses-01.json")
                            .read_text())
        statuses[subject] = report["status"]
        # Verification checked every staged file against the manifest: nothing half-staged.
        assert not [f for f in report["findings"] if f["check"] in ("inventory", "integrity")]
    assert statuses == {"sub-001": "pass", "sub-002": "warn", "sub-003": "fail",
                        "sub-big": "warn"}
    # Each uploadable session went up exactly once; the failed one never.
    done = (project / "fw-done.txt").read_text().split()
    assert sorted(done) == ["sub-001/ses-01", "sub-002/ses-01", "sub-big/ses-01"]
    ledger = [json.loads(line) for line in
              (project / "upload-ledger.jsonl").read_text().splitlines()]
    assert sorted(entry["subject"] for entry in ledger) == ["sub-001", "sub-002", "sub-big"]
    assert leftovers(project) == []
    assert tree_digest(project / "demo") == source_before
    assert identifiers_in_run_outputs(project) == []


def test_a_second_run_in_the_same_folder_is_refused(project):
    # Every upload hangs, so the first run holds the lock with exactly one call under way.
    env = {**fake_fw_env(project), "FAKE_FW_HANG": "sub-001/ses-01,sub-002/ses-01"}
    first = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", "2", *UPLOAD], cwd=project,
        env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        calls = project / "fw-calls.jsonl"
        deadline = time.monotonic() + 120
        while not calls.exists() and time.monotonic() < deadline:
            time.sleep(0.2)  # wait until the first run is uploading (and holds the lock)
        assert calls.exists(), "the first run never reached its upload"
        second = run_snakemake(project, *UPLOAD, env=env)
        assert second.returncode != 0
        assert "Directory cannot be locked" in second.stderr
        assert "Traceback" not in second.stderr
        assert len(calls.read_text().splitlines()) == 1  # the second run uploaded nothing
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)


def limit_file_size(max_bytes: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return apply


def test_a_failing_write_fails_the_session_cleanly(tmp_path, profile_v1):
    source = tmp_path / "source"
    build_session(SessionSpec("s", [SeriesSpec("CT_small.dcm", "CT", 3)]), source)
    source_before = tree_digest(source)
    staged = tmp_path / "staging" / "sub-01" / "ses-01"
    manifest = tmp_path / "staging" / "sub-01" / "ses-01.manifest.json"
    # Staged CT files are about 40 kB: a 20 kB limit makes the first write fail half-way.
    result = subprocess.run(
        [sys.executable, "-m", "deidpipe", "stage", "--dicom-dir", str(source),
         "--profile", str(profile_v1), "--staged-dir", str(staged), "--manifest", str(manifest)],
        preexec_fn=limit_file_size(20_000), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: session {tmp_path}/staging/sub-01/ses-01: could "
                                    "not read or write a file")
    assert "File too large" in result.stderr and "Traceback" not in result.stderr
    assert not staged.exists() and not manifest.exists()
    assert sorted(path.name for path in (tmp_path / "staging" / "sub-01").iterdir()) == []
    assert tree_digest(source) == source_before
