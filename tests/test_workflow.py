"""End-to-end: Snakemake on the demo, in a temporary copy of the project, as a user runs it."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import (
    FAKE_FW,
    PROJECT_FILES,
    files_containing_identifiers,
    fw_calls,
    identifiers_in_run_outputs,
    run_snakemake,
    tree_digest,
)

DEMO = ("sub-001", "sub-002", "sub-003")


def upload_env(log: Path, fail: str = "") -> dict[str, str]:
    return {"FAKE_FW_LOG": str(log), "FAKE_FW_FAIL": fail}


def upload_config(*extra: str) -> list[str]:
    return ["--config", "upload=true", f"fw={FAKE_FW}", *extra]


def test_demo_dry_run_produces_everything_and_leaks_nothing(project):
    source_before = tree_digest(project / "demo")
    result = run_snakemake(project)
    assert result.returncode == 0, result.stderr
    assert (project / "results/profile/PennBrainScienceCenter.yaml").is_file()
    for subject in DEMO:
        assert any((project / f"staging/demo/deid-demo/{subject}/ses-01").rglob("*.dcm"))
        report = json.loads((project / f"results/verify/demo/deid-demo/{subject}/ses-01.json")
                            .read_text())
        assert report["status"] == {"sub-001": "pass", "sub-002": "warn",
                                    "sub-003": "fail"}[subject]
    summary = pd.read_csv(project / "results/summary.tsv", sep="\t", dtype=str)
    assert list(summary.columns) == ["group", "project", "subject", "session", "files",
                                     "status", "uploaded", "review"]
    assert dict(zip(summary.subject, summary.status, strict=True)) == {
        "sub-001": "pass", "sub-002": "warn", "sub-003": "fail"}
    assert set(summary.uploaded) == {"no (upload is off)"}
    # The warned session waits for a person even with upload off.
    assert dict(zip(summary.subject, summary.review.fillna(""), strict=True)) == {
        "sub-001": "", "sub-002": "waiting: deidpipe approve sub-002 ses-01 --by NAME",
        "sub-003": ""}
    assert "  deidpipe approve sub-002 ses-01 --by NAME\n" in result.stderr
    assert "3 session(s): 1 passed, 1 warned, 1 failed verification" in result.stderr
    assert "Summary: results/summary.tsv" in result.stderr
    assert ("warn: demo/deid-demo/sub-002/ses-01 (look at its warnings in "
            "results/report.html)") in result.stderr
    # The run's page shows every section with the demo's content.
    page = (project / "results/report.html").read_text()
    for section in ("counts", "sessions", "findings", "free-text", "private-tags", "burned-in",
                    "basic-profile-audit", "changes"):
        assert f'id="{section}"' in page, section
    burned_in = page[page.index('id="burned-in"'):page.index('id="basic-profile-audit"')]
    assert "Dose Report" in burned_in and "Secondary Capture" in burned_in
    assert "GEMS_IDEN_01" in page and "T1w MPRAGE" in page and "StudyDate" in page
    # The source is only read; nothing but staging holds identifiers.
    assert tree_digest(project / "demo") == source_before
    assert identifiers_in_run_outputs(project) == []
    for stream in (result.stdout, result.stderr):
        assert files_containing_identifiers_in_text(stream) == []
    # Everything the run created is owner-only: staged copies, results, and Snakemake's own
    # folder (its log lists every job's labels; it makes it readable by all by itself).
    assert_created_paths_owner_only(project)


def assert_created_paths_owner_only(project: Path) -> None:
    """Every path in the project folder but the project's own files is owner-only."""
    created = [path for path in project.rglob("*")
               if path.relative_to(project).parts[0] not in PROJECT_FILES]
    assert any(path.parent.name == "log" and path.name.endswith(".snakemake.log")
               for path in created)
    assert any(path.parent.name == "metadata" for path in created)
    open_to_others = [str(path.relative_to(project)) for path in created
                      if not path.is_symlink() and path.lstat().st_mode & 0o077]
    assert open_to_others == []


def files_containing_identifiers_in_text(text: str) -> list[str]:
    from conftest import identifier_needles
    return [needle.decode() for needle in identifier_needles() if needle.decode() in text]


def approve(project: Path, *args: str) -> subprocess.CompletedProcess:
    """`deidpipe approve ...` typed in the project folder."""
    return subprocess.run([sys.executable, "-m", "deidpipe", "approve", *args], cwd=project,
                          capture_output=True, text=True, timeout=60, check=False)


def test_failed_upload_is_retried_warned_waits_for_approval_nothing_repeated(project,
                                                                            fake_fw_log):
    # (a) first run: the CLI fails for sub-001; sub-002 (warn) waits for a person; sub-003 is
    # blocked by verification.
    first = run_snakemake(project, *upload_config(),
                          env=upload_env(fake_fw_log, "sub-001/ses-01"))
    assert first.returncode != 0
    assert "sub-001" in first.stderr and "exit code was 1" in first.stderr
    assert [call["subject"] for call in fw_calls(fake_fw_log)] == ["sub-001"]
    records = project / "results/upload/demo/deid-demo"
    assert not (records / "sub-001/ses-01.json").exists()
    held = json.loads((records / "sub-002/ses-01.json").read_text())
    assert held["uploaded"] is False and held["held"] == "waiting"
    assert held["reason"].endswith("then run `deidpipe approve sub-002 ses-01 --by NAME`")
    blocked = json.loads((records / "sub-003/ses-01.json").read_text())
    assert blocked["uploaded"] is False and "verification failed" in blocked["reason"]
    summary = pd.read_csv(project / "results/summary.tsv", sep="\t", dtype=str,
                          keep_default_na=False).set_index("subject")  # written by onerror
    assert summary.loc["sub-001", "uploaded"].startswith("no (upload failed")
    assert summary.loc["sub-002", "uploaded"] == "no (waiting for review)"
    assert summary.loc["sub-002", "review"] == "waiting: deidpipe approve sub-002 ses-01 --by NAME"
    assert "  deidpipe approve sub-002 ses-01 --by NAME\n" in first.stderr

    # Second run: only sub-001 is sent; sub-002 still waits.
    second = run_snakemake(project, *upload_config(), env=upload_env(fake_fw_log))
    assert second.returncode == 0, second.stderr
    assert [call["subject"] for call in fw_calls(fake_fw_log)] == ["sub-001", "sub-001"]
    assert "1 uploaded" in second.stderr

    # A person approves sub-002; the next run sends it, and only it.
    approved = approve(project, "sub-002", "ses-01", "--by", "Test Reviewer")
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.startswith("approved demo/deid-demo/sub-002/ses-01 as Test Reviewer")
    assert "To upload it: snakemake --cores 4 --config upload=true" in approved.stdout
    assert approve(project, "sub-003", "ses-01", "--by", "TR").returncode == 1
    third = run_snakemake(project, *upload_config(), env=upload_env(fake_fw_log))
    assert third.returncode == 0, third.stderr
    assert [call["subject"] for call in fw_calls(fake_fw_log)][2:] == ["sub-002"]
    assert "2 uploaded" in third.stderr
    record = json.loads((records / "sub-002/ses-01.json").read_text())
    assert record["uploaded"] is True and record["approved_by"] == "Test Reviewer"
    summary = pd.read_csv(project / "results/summary.tsv", sep="\t", dtype=str,
                          keep_default_na=False).set_index("subject")
    assert summary.loc["sub-002", "review"].startswith("approved by Test Reviewer on ")
    assert summary.loc["sub-001", "uploaded"] == "yes"  # not rerun by the approval

    # Change nothing, run again: nothing to do, no call.
    fourth = run_snakemake(project, *upload_config(), env=upload_env(fake_fw_log))
    assert fourth.returncode == 0, fourth.stderr
    assert len(fw_calls(fake_fw_log)) == 3

    # Even --forceall (everything restaged and verified again) uploads nothing twice.
    forced = run_snakemake(project, "--forceall", *upload_config(), env=upload_env(fake_fw_log))
    assert forced.returncode == 0, forced.stderr
    assert len(fw_calls(fake_fw_log)) == 3
    ledger = (project / "upload-ledger.jsonl").read_text().splitlines()
    assert len(ledger) == 2
    assert identifiers_in_run_outputs(project) == []
    assert files_containing_identifiers_in_text((project / "approvals.tsv").read_text()) == []
    # Five runs, uploads, an approval, a forced rerun: still nothing open to others (ledger,
    # approvals sheet, CLI logs and audit logs included).
    assert (project / "upload-ledger.jsonl").is_file() and (project / "approvals.tsv").is_file()
    assert list((project / "results/logs/upload").rglob("*.audit-*.csv"))
    assert_created_paths_owner_only(project)


def dry_run_subjects(project: Path, *args: str) -> set[str]:
    result = run_snakemake(project, "--dry-run", *args)
    assert result.returncode == 0, result.stderr
    return {subject for subject in ("sub-001", "sub-002", "sub-003", "sub-004")
            if f"subject={subject}," in result.stdout + result.stderr}


def test_added_or_changed_rows_plan_only_their_sessions(project):
    assert run_snakemake(project).returncode == 0
    assert dry_run_subjects(project) == set()
    # (b) a row appended to the sheet plans jobs for that session only.
    shutil.copytree(project / "demo/dicom/sub-002_ses-01", project / "demo/new")
    with open(project / "sessions.tsv", "a") as sheet:
        sheet.write("sub-004\tses-01\tdemo/new\tadded later\n")
    assert dry_run_subjects(project) == {"sub-004"}
    # A changed row (its dicom_dir) reruns that session only.
    sheet = (project / "sessions.tsv").read_text()
    (project / "sessions.tsv").write_text(sheet.replace("demo/dicom/sub-002_ses-01", "demo/new"))
    assert dry_run_subjects(project) == {"sub-002", "sub-004"}


def test_invalid_sheet_stops_before_anything_runs(project):
    with open(project / "sessions.tsv", "a") as sheet:
        sheet.write("../escape\tses-01\tdemo/dicom/sub-001_ses-01\t\n")
    result = run_snakemake(project)
    assert result.returncode != 0
    assert "row 5, column 'subject'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (project / "staging").exists()
    assert not (project / "results").exists()


def test_malformed_approvals_sheet_stops_before_anything_runs(project):
    (project / "approvals.tsv").write_text(
        "group\tproject\tsubject\tsession\tdecision\tby\twhen\treport_sha256\n"
        "demo\tdeid-demo\tsub-002\tses-01\tapprove\tTR\tyesterday\t" + "a" * 64 + "\n")
    result = run_snakemake(project, "--dry-run")
    assert result.returncode != 0
    assert "approvals sheet approvals.tsv has 1 problem(s)" in result.stderr
    assert "line 2, column 7 (when): 'yesterday' is not an ISO 8601 date" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_errors_are_plain_messages(project):
    result = run_snakemake(project, "--config", "upload=maybe", "colour=blue")
    assert result.returncode != 0
    assert "setting 'upload' must be true or false" in result.stderr
    assert "setting 'colour' is not a setting this pipeline knows" in result.stderr
    assert "Traceback" not in result.stderr
    missing_cli = run_snakemake(project, "--config", "upload=true", "fw=/no/such/fw")
    assert missing_cli.returncode == 1  # stopped before any job, with the plain message only
    assert "the Flywheel CLI '/no/such/fw' was not found" in missing_cli.stderr
    assert "Traceback" not in missing_cli.stderr
    assert not (project / "staging").exists()
    assert run_snakemake(project, "--dry-run", "--config", "fw=/no/such/fw").returncode == 0


def test_numeric_group_keeps_its_text(project):
    result = run_snakemake(project, "--dry-run", "--config", "group=007")
    assert result.returncode == 0, result.stderr
    assert "staging/007/deid-demo/sub-001/ses-01.manifest.json" in result.stdout + result.stderr


def test_phi_log_is_opt_in_private_and_announced(project):
    result = run_snakemake(project, "--config", "phi_log=phi-log",
                           "checks={staff_name: fail, private_tags: keep, burned_in_risk: 'off', "
                           "burned_in_text_review: 'off'}")
    # sub-003 still fails (its leaks); sub-002's warnings are switched off, so it passes.
    summary = pd.read_csv(project / "results/summary.tsv", sep="\t", dtype=str)
    assert dict(zip(summary.subject, summary.status, strict=True)) == {
        "sub-001": "pass", "sub-002": "pass", "sub-003": "fail"}
    assert "WARNING: the PHI log in phi-log holds patient identifiers" in result.stderr
    logs = sorted((project / "phi-log").rglob("*.tsv"))
    assert [log.relative_to(project / "phi-log").as_posix() for log in logs] == [
        f"demo/deid-demo/{subject}/ses-01.tsv" for subject in DEMO]
    assert all(log.stat().st_mode & 0o777 == 0o600 for log in logs)
    assert files_containing_identifiers(project / "phi-log")  # it does hold the values
    assert identifiers_in_run_outputs(project) == []
    for stream in (result.stdout, result.stderr):
        assert files_containing_identifiers_in_text(stream) == []


def test_snakemake_report_holds_the_verification_reports(project):
    assert run_snakemake(project).returncode == 0
    result = run_snakemake(project, "--report", "snakemake-report.html")
    assert result.returncode == 0, result.stderr
    page = (project / "snakemake-report.html").read_text()
    assert "Verification" in page and "ses-01.json" in page


@pytest.mark.parametrize("jobs", [2, 1])
def test_upload_jobs_lets_that_many_uploads_run_at_once(project, fake_fw_log, jobs):
    # Each upload waits until two run at once: with upload_jobs=2 the first is still running
    # when the second starts, however long the second session's verification takes; with 1
    # (the control) each gives up after 2 s, having seen only itself.
    running = project / "fw-running"
    env = {**upload_env(fake_fw_log), "FAKE_FW_RUNNING_DIR": str(running),
           "FAKE_FW_WAIT_FOR_OTHERS": "2:120" if jobs == 2 else "2:2"}
    result = run_snakemake(project, *upload_config("upload_warned=true", f"upload_jobs={jobs}"),
                           env=env)
    assert result.returncode == 0, result.stderr
    calls = fw_calls(fake_fw_log)
    assert sorted(call["subject"] for call in calls) == ["sub-001", "sub-002"]
    most_at_once = max(int(line) for line in Path(f"{running}.seen").read_text().split())
    assert most_at_once == jobs


def test_other_sessions_carry_on_when_one_session_cannot_be_written(project):
    # sub-002's staging folder is a file system with room for one file only: writing that
    # session fails for want of space (ENOSPC), as on a full disk.
    full = project / "staging" / "demo" / "deid-demo" / "sub-002"
    full.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24k", "tmpfs", str(full)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"a small file system cannot be mounted here: {mounted.stderr.strip()}")
    # Not empty: Snakemake would try to remove an empty output folder (the mount point).
    (full / "other-data.txt").write_text("kept\n")
    try:
        result = run_snakemake(project)
    finally:
        subprocess.run(["umount", str(full)], check=True)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert ("error: session staging/demo/deid-demo/sub-002/ses-01: could not read or write a "
            "file: No space left on device. Nothing of this job was kept") in result.stderr
    reports = project / "results/verify/demo/deid-demo"
    assert (reports / "sub-001/ses-01.json").is_file()
    assert (reports / "sub-003/ses-01.json").is_file()
    assert not (reports / "sub-002/ses-01.json").exists()
    summary = (project / "results/summary.tsv").read_text()
    assert "sub-001" in summary and "sub-003" in summary
