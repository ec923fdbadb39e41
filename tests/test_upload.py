import hashlib
import json
import os
import time
from pathlib import Path

import pytest
import yaml

from conftest import FAKE_FW, REPO, fw_calls
from deidpipe import upload as upload_module
from deidpipe.approvals import append_decision
from deidpipe.config import UPLOAD_COMMANDS, normalise_config, template_problems
from deidpipe.errors import PipelineError
from deidpipe.stage import stage_session
from deidpipe.synthetic import SeriesSpec, SessionSpec, build_session, plant_private_tag
from deidpipe.upload import build_command, upload_session
from deidpipe.verify import verify_session

LABELS = {"group": "lab", "project": "p", "subject": "sub-01", "session": "ses-01"}
IMPORT_17, INGEST_18 = UPLOAD_COMMANDS["17"], UPLOAD_COMMANDS["18"]


@pytest.fixture
def verified(tmp_path, profile_v1):
    """A staged and verified session; returns a function that uploads it."""
    def prepare(plant=None):
        source = tmp_path / "source"
        build_session(SessionSpec("s", [SeriesSpec("MR_small.dcm", "T1w", 2)], plant=plant),
                      source)
        stage_session(source, profile_v1, tmp_path / "staged", tmp_path / "manifest.json")
        verify_session(source, tmp_path / "staged", tmp_path / "manifest.json", profile_v1,
                       LABELS, tmp_path / "report.json")
    return prepare


def upload(tmp_path: Path, monkeypatch, template: str = IMPORT_17, fail: str = "",
           soft_fail: str = "",
           timeout: int = 60, reupload: bool = False, extra_env=None,
           upload_warned: bool = False, audit_fail: str = "", stop_after: int = -1) -> dict:
    monkeypatch.setenv("FAKE_FW_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("FAKE_FW_SERVER", str(tmp_path / "flywheel.jsonl"))
    monkeypatch.setenv("FAKE_FW_FAIL", fail)
    monkeypatch.setenv("FAKE_FW_SOFT_FAIL", soft_fail)
    monkeypatch.setenv("FAKE_FW_AUDIT_FAIL", audit_fail)
    monkeypatch.setenv("FAKE_FW_STOP_AFTER", str(stop_after))
    return upload_session(
        labels=LABELS, verify_report_path=tmp_path / "report.json",
        manifest_path=tmp_path / "manifest.json", staged_session_dir=tmp_path / "staged",
        record_path=tmp_path / "record.json", log_path=tmp_path / "fw.log", fw=str(FAKE_FW),
        command_template=template,
        extra_env={"FLYWHEEL_CLI_LEGACY": "true"} if extra_env is None else extra_env,
        timeout=timeout, ledger_path=tmp_path / "ledger.jsonl", reupload=reupload,
        upload_warned=upload_warned, approvals_path=tmp_path / "approvals.tsv")


def test_passed_session_is_uploaded_once_with_a_record(tmp_path, monkeypatch, verified):
    verified()
    record = upload(tmp_path, monkeypatch)
    calls = fw_calls(tmp_path / "calls.jsonl")
    assert len(calls) == 1
    assert calls[0]["argv"][:2] == ["import", "dicom"]
    assert (calls[0]["subject"], calls[0]["session"]) == ("sub-01", "ses-01")
    assert len(calls[0]["files"]) == 2 and all(f.endswith(".MR.dcm") for f in calls[0]["files"])
    assert record["uploaded"] is True and record["files"] == 2 and record["exit_code"] == 0
    assert json.loads((tmp_path / "record.json").read_text()) == record
    assert "Uploaded 2 files" in (tmp_path / "fw.log").read_text()
    ledger = [json.loads(line) for line in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    assert len(ledger) == 1 and ledger[0]["manifest_sha256"] == record["manifest_sha256"]


def test_ingest_form_works_too(tmp_path, monkeypatch, verified):
    verified()
    upload(tmp_path, monkeypatch, template=INGEST_18, extra_env={})
    assert fw_calls(tmp_path / "calls.jsonl")[0]["argv"][:2] == ["ingest", "dicom"]


def test_failed_session_is_blocked_without_calling_the_cli(tmp_path, monkeypatch, verified):
    verified(plant=plant_private_tag)
    record = upload(tmp_path, monkeypatch)
    assert record["uploaded"] is False
    assert record["reason"].startswith("blocked: verification failed")
    assert fw_calls(tmp_path / "calls.jsonl") == []
    assert not (tmp_path / "ledger.jsonl").exists()


def test_cli_failure_leaves_no_record(tmp_path, monkeypatch, verified):
    verified()
    with pytest.raises(PipelineError, match=r"the upload failed \(the Flywheel CLI's exit code "
                                            r"was 1\)\. The CLI's output is in .*fw\.log"):
        upload(tmp_path, monkeypatch, fail="sub-01/ses-01")
    assert not (tmp_path / "record.json").exists()
    assert not (tmp_path / "ledger.jsonl").exists()
    # The next run retries and succeeds.
    assert upload(tmp_path, monkeypatch)["uploaded"] is True
    assert len(fw_calls(tmp_path / "calls.jsonl")) == 2


def test_missing_legacy_flag_is_a_failure(tmp_path, monkeypatch, verified):
    verified()
    with pytest.raises(PipelineError, match="offers `fw import` only with FLYWHEEL_CLI_LEGACY"):
        upload(tmp_path, monkeypatch, extra_env={})
    assert not (tmp_path / "record.json").exists()


def test_hanging_cli_is_stopped(tmp_path, monkeypatch, verified):
    verified()
    monkeypatch.setenv("FAKE_FW_HANG", "sub-01/ses-01")
    with pytest.raises(PipelineError, match="did not finish within 1 s"):
        upload(tmp_path, monkeypatch, timeout=1)
    assert not (tmp_path / "record.json").exists()


def test_changed_staged_file_is_refused(tmp_path, monkeypatch, verified):
    verified()
    target = next((tmp_path / "staged").rglob("*.dcm"))
    target.write_bytes(target.read_bytes() + b"edited")
    with pytest.raises(PipelineError, match="changed after verification"):
        upload(tmp_path, monkeypatch)
    assert fw_calls(tmp_path / "calls.jsonl") == []


def test_ledger_prevents_a_second_upload(tmp_path, monkeypatch, verified):
    verified()
    upload(tmp_path, monkeypatch)
    (tmp_path / "record.json").unlink()  # results deleted, or --forceall
    record = upload(tmp_path, monkeypatch)
    assert record["uploaded"] is True and "not sent again" in record["note"]
    assert len(fw_calls(tmp_path / "calls.jsonl")) == 1


def test_ledger_refuses_other_staged_files_unless_told(tmp_path, monkeypatch, verified):
    verified()
    upload(tmp_path, monkeypatch)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(manifest.read_text() + " ")  # a re-staged session (new profile, say)
    with pytest.raises(PipelineError, match="already uploaded .* reupload=true"):
        upload(tmp_path, monkeypatch)
    assert len(fw_calls(tmp_path / "calls.jsonl")) == 1
    upload(tmp_path, monkeypatch, reupload=True)
    assert len(fw_calls(tmp_path / "calls.jsonl")) == 2


def test_command_template_placeholders():
    values = {"fw": "/opt/fw", "staged_session_dir": "/s/a b", "audit_log": "/r/a.csv",
              **LABELS}
    assert build_command(IMPORT_17, values)[:4] == ["/opt/fw", "import", "dicom", "/s/a b"]
    assert build_command(INGEST_18, values)[-3:] == ["--save-audit-logs", "/r/a.csv", "-y"]
    with pytest.raises(PipelineError, match="allowed placeholders"):
        build_command("{fw} import {nope}", values)


def plant_name_part(dataset):
    dataset.ImageComments = "ask Alice"  # a part of the patient's name: a warning


def decide(tmp_path: Path, decision: str = "approve", by: str = "Test Reviewer",
           when: str = "2025-05-01T14:30:00+02:00", labels=None) -> None:
    """A line of the approvals sheet for the session's current verification report."""
    report_sha256 = hashlib.sha256((tmp_path / "report.json").read_bytes()).hexdigest()
    append_decision(tmp_path / "approvals.tsv", {
        **(labels or LABELS), "decision": decision, "by": by, "when": when,
        "report_sha256": report_sha256})


@pytest.fixture
def warned(tmp_path, verified):
    verified(plant=plant_name_part)
    assert json.loads((tmp_path / "report.json").read_text())["status"] == "warn"


def test_warned_session_waits_for_a_person(tmp_path, monkeypatch, warned):
    # A decision on another session, and one for this session in another project, do not count.
    decide(tmp_path, labels={**LABELS, "subject": "sub-02"})
    decide(tmp_path, labels={**LABELS, "project": "other"})
    record = upload(tmp_path, monkeypatch)
    assert fw_calls(tmp_path / "calls.jsonl") == []
    assert record["uploaded"] is False and record["held"] == "waiting"
    assert record["reason"].startswith("held: waiting for review: verification warned")
    assert record["reason"].endswith("then run `deidpipe approve sub-01 ses-01 --by NAME`")
    assert json.loads((tmp_path / "record.json").read_text()) == record
    assert not (tmp_path / "ledger.jsonl").exists()


def test_approved_session_is_uploaded_once(tmp_path, monkeypatch, warned):
    decide(tmp_path, "reject", by="First Look")
    decide(tmp_path, "approve")  # the latest line wins
    record = upload(tmp_path, monkeypatch)
    assert len(fw_calls(tmp_path / "calls.jsonl")) == 1
    assert record["uploaded"] is True
    assert (record["approved_by"], record["approved_when"]) == ("Test Reviewer",
                                                                "2025-05-01T14:30:00+02:00")
    assert record["approval"] == f"line 3 of {tmp_path / 'approvals.tsv'}"
    ledger = [json.loads(line) for line in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    assert [entry["approved_by"] for entry in ledger] == ["Test Reviewer"]
    # The next run (results deleted, or the sheet changed) sends nothing again.
    (tmp_path / "record.json").unlink()
    again = upload(tmp_path, monkeypatch)
    assert again["uploaded"] is True and "not sent again" in again["note"]
    assert again["approved_by"] == "Test Reviewer"
    assert len(fw_calls(tmp_path / "calls.jsonl")) == 1


def test_approval_of_an_earlier_verification_no_longer_applies(tmp_path, monkeypatch, warned):
    decide(tmp_path, "approve")
    report = tmp_path / "report.json"
    report.write_bytes(report.read_bytes() + b" ")  # staged and verified again since
    record = upload(tmp_path, monkeypatch)
    assert fw_calls(tmp_path / "calls.jsonl") == []
    assert record["uploaded"] is False and record["held"] == "stale"
    assert "approved by Test Reviewer on 2025-05-01 14:30+02:00) was for an earlier " \
           "verification and no longer applies" in record["reason"]
    assert record["reason"].endswith("`deidpipe approve sub-01 ses-01 --by NAME`")
    # Approved again, for this report: uploaded.
    decide(tmp_path, "approve", by="TR")
    assert upload(tmp_path, monkeypatch)["approved_by"] == "TR"
    assert len(fw_calls(tmp_path / "calls.jsonl")) == 1


def test_already_uploaded_session_is_not_reported_as_held(tmp_path, monkeypatch, warned):
    decide(tmp_path, "approve")
    upload(tmp_path, monkeypatch)
    report = tmp_path / "report.json"
    report.write_bytes(report.read_bytes() + b" ")  # --forceall, say: the same staged files
    record = upload(tmp_path, monkeypatch)
    assert record["uploaded"] is True and "not sent again" in record["note"]
    assert "no longer applies" in record["note"]
    assert len(fw_calls(tmp_path / "calls.jsonl")) == 1


@pytest.mark.parametrize("upload_warned", [False, True])
def test_rejected_session_is_not_uploaded(tmp_path, monkeypatch, warned, upload_warned):
    decide(tmp_path, "approve")
    decide(tmp_path, "reject", by="Second Reviewer", when="2025-05-02T09:15:00Z")
    record = upload(tmp_path, monkeypatch, upload_warned=upload_warned)
    assert fw_calls(tmp_path / "calls.jsonl") == []
    assert record["uploaded"] is False and record["held"] == "rejected"
    assert record["reason"] == ("rejected by Second Reviewer on 2025-05-02 09:15+00:00 "
                                f"(approvals sheet {tmp_path / 'approvals.tsv'} line 3)")


def test_upload_warned_uploads_without_approval(tmp_path, monkeypatch, warned):
    record = upload(tmp_path, monkeypatch, upload_warned=True)
    assert record["uploaded"] is True and "approved_by" not in record
    assert len(fw_calls(tmp_path / "calls.jsonl")) == 1


def test_malformed_approvals_sheet_fails_the_upload_and_names_the_line(tmp_path, monkeypatch,
                                                                       warned):
    decide(tmp_path, "approve")
    sheet = tmp_path / "approvals.tsv"
    sheet.write_text(sheet.read_text() + "g\tp\tsub-01\tses-01\tok\tTR\tnow\tx\n")
    with pytest.raises(PipelineError, match=r"line 3, column 5 \(decision\)"):
        upload(tmp_path, monkeypatch)
    assert fw_calls(tmp_path / "calls.jsonl") == []
    assert not (tmp_path / "record.json").exists()  # retried by the next run


def test_withheld_label_is_held_without_repeating_it(tmp_path, monkeypatch, warned):
    report = tmp_path / "report.json"
    document = json.loads(report.read_text())
    document["session"]["subject"] = "(withheld: holds an identifier)"
    report.write_text(json.dumps(document))
    record = upload(tmp_path, monkeypatch)
    assert record["held"] == "withheld" and "cannot be approved" in record["reason"]
    assert "sub-01" not in record["reason"]
    assert fw_calls(tmp_path / "calls.jsonl") == []


def test_cli_error_printed_with_exit_zero_is_a_failure(tmp_path, monkeypatch, verified):
    verified()
    with pytest.raises(PipelineError, match="exited 0 but its output reports an error "
                                            r"\(line 3 of .*fw.log\)"):
        upload(tmp_path, monkeypatch, soft_fail="sub-01/ses-01")
    assert not (tmp_path / "record.json").exists()
    assert not (tmp_path / "ledger.jsonl").exists()
    # The next run (the CLI working again) uploads it; the earlier error lines do not count.
    record = upload(tmp_path, monkeypatch)
    assert record["uploaded"] is True
    assert len(fw_calls(tmp_path / "calls.jsonl")) == 2


def test_extra_error_patterns_from_the_config(tmp_path, monkeypatch, verified):
    verified()
    monkeypatch.setenv("FAKE_FW_LOG", str(tmp_path / "calls.jsonl"))
    with pytest.raises(PipelineError, match="reports an error"):
        upload_session(
            labels=LABELS, verify_report_path=tmp_path / "report.json",
            manifest_path=tmp_path / "manifest.json", staged_session_dir=tmp_path / "staged",
            record_path=tmp_path / "record.json", log_path=tmp_path / "fw.log",
            fw=str(FAKE_FW), command_template=IMPORT_17,
            extra_env={"FLYWHEEL_CLI_LEGACY": "true"}, timeout=60,
            ledger_path=tmp_path / "ledger.jsonl", extra_error_patterns=(r"^Uploaded 2 files",))


def deidpipe(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    """`deidpipe ...` as the rules run it."""
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "deidpipe", *args], cwd=cwd,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture
def staged_in_place(tmp_path, profile_v1):
    """A staged and verified session at its places below staging and results, as the rules
    put it; the upload settings as the rules write them."""
    source = tmp_path / "source"
    build_session(SessionSpec("s", [SeriesSpec("MR_small.dcm", "T1w", 2)]), source)
    where = "/".join(LABELS.values())
    manifest = tmp_path / "staging" / f"{where}.manifest.json"
    stage_session(source, profile_v1, tmp_path / "staging" / where, manifest)
    report = tmp_path / "results" / "verify" / f"{where}.json"
    verify_session(source, tmp_path / "staging" / where, manifest, profile_v1, LABELS, report)
    settings = tmp_path / "upload-settings.json"
    settings.write_text(json.dumps({
        "fw": str(FAKE_FW), "command": IMPORT_17, "env": {"FLYWHEEL_CLI_LEGACY": "true"},
        "error_patterns": [], "timeout": 60, "ledger": str(tmp_path / "ledger.jsonl"),
        "reupload": False, "approvals": str(tmp_path / "approvals.tsv"),
        "upload_warned": False}))
    return {"manifest": manifest, "report": report, "settings": settings, "where": where,
            "record": tmp_path / "results" / "upload" / f"{where}.json"}


def test_upload_command_takes_one_settings_file_and_reads_the_rest_from_the_manifest(
        tmp_path, staged_in_place):
    places = staged_in_place
    calls = tmp_path / "calls.jsonl"
    result = deidpipe("--results", str(tmp_path / "results"), "upload",
                      "--report", str(places["report"]), "--manifest", str(places["manifest"]),
                      "--record", str(places["record"]),
                      "--settings-file", str(places["settings"]),
                      env={"FAKE_FW_LOG": str(calls)})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # the job's messages are in its log
    log = tmp_path / "results" / "logs" / "upload" / f"{places['where']}.log"
    assert log.read_text() == "uploaded 2 file(s)\n"
    (call,) = fw_calls(calls)
    # The labels are the manifest's place; the staged folder is the one beside the manifest.
    assert (call["subject"], call["session"]) == ("sub-01", "ses-01")
    assert call["argv"][2:5] == [str(tmp_path / "staging" / places["where"]), "lab", "p"]
    assert json.loads(places["record"].read_text())["uploaded"] is True
    fw_log = tmp_path / "results" / "logs" / "upload" / f"{places['where']}.fw.log"
    assert "Uploaded 2 files" in fw_log.read_text()


def test_upload_command_failure_shows_its_log_and_names_bad_settings(tmp_path,
                                                                     staged_in_place):
    places = staged_in_place
    arguments = ["--results", str(tmp_path / "results"), "upload",
                 "--report", str(places["report"]), "--manifest", str(places["manifest"]),
                 "--record", str(places["record"])]
    failed = deidpipe(*arguments, "--settings-file", str(places["settings"]),
                      env={"FAKE_FW_LOG": str(tmp_path / "calls.jsonl"),
                           "FAKE_FW_FAIL": "sub-01/ses-01"})
    assert failed.returncode == 1
    message = ("error: session lab/p/sub-01/ses-01: the upload failed (the Flywheel CLI's exit "
               "code was 1). The CLI's output is in ")
    assert failed.stderr.startswith(message)  # on the console, as in the log
    log = tmp_path / "results" / "logs" / "upload" / f"{places['where']}.log"
    assert log.read_text() == failed.stderr
    assert not places["record"].exists()
    settings = json.loads(places["settings"].read_text())
    del settings["ledger"]
    broken = deidpipe(*arguments, "--settings", json.dumps({**settings, "colour": "blue"}))
    assert broken.returncode == 1
    assert "the upload settings lack 'ledger'; hold an unknown key 'colour'" in broken.stderr


def on_server(tmp_path: Path) -> list[str]:
    """The files the fake Flywheel holds for the session, each as often as it was sent."""
    with open(tmp_path / "flywheel.jsonl", encoding="utf-8") as handle:
        return sorted(json.loads(line)["where"][-1] for line in handle)


@pytest.mark.parametrize("template", [IMPORT_17, INGEST_18], ids=["import", "ingest"])
def test_record_keeps_the_audit_log_and_what_the_cli_reported(tmp_path, monkeypatch, verified,
                                                              template):
    verified()
    record = upload(tmp_path, monkeypatch, template=template)
    audit_log = Path(record["audit_log"])
    assert audit_log.parent == tmp_path and audit_log.name.startswith("fw.audit-")
    assert audit_log.is_file()
    assert record["cli_reported"] == {"entries": 2, "uploaded": 2, "already_in_flywheel": 0}
    assert record["files"] == 2


@pytest.mark.parametrize("template", [IMPORT_17, INGEST_18], ids=["import", "ingest"])
def test_failed_file_in_the_audit_log_fails_the_upload_despite_exit_zero(
        tmp_path, monkeypatch, verified, template):
    verified()
    with pytest.raises(PipelineError, match=r"audit log .* reports 1 of 2 entries not uploaded "
                                            r"\(first: line \d+, (status failed, error GE01|"
                                            r"marked failed)\)"):
        upload(tmp_path, monkeypatch, template=template, audit_fail="sub-01/ses-01")
    assert not (tmp_path / "record.json").exists()
    assert not (tmp_path / "ledger.jsonl").exists()


@pytest.mark.parametrize("template", [IMPORT_17, INGEST_18], ids=["import", "ingest"])
def test_upload_retried_after_an_interruption_sends_only_what_is_missing(
        tmp_path, monkeypatch, verified, template):
    verified()
    with pytest.raises(PipelineError, match="retried by the next run"):
        upload(tmp_path, monkeypatch, template=template, stop_after=1)
    assert len(on_server(tmp_path)) == 1  # the interruption left one file in Flywheel
    assert not (tmp_path / "record.json").exists()
    record = upload(tmp_path, monkeypatch, template=template)
    files = on_server(tmp_path)
    assert len(files) == 2 and len(set(files)) == 2  # each file once: no duplicate
    assert record["cli_reported"] == {"entries": 2, "uploaded": 1, "already_in_flywheel": 1}
    # Control: without --skip-existing the same retry sends the file in Flywheel again.
    (tmp_path / "flywheel.jsonl").unlink()
    (tmp_path / "ledger.jsonl").unlink()
    with pytest.raises(PipelineError):
        upload(tmp_path, monkeypatch, template=template.replace(" --skip-existing", ""),
               stop_after=1)
    upload(tmp_path, monkeypatch, template=template.replace(" --skip-existing", ""))
    assert len(on_server(tmp_path)) == 3


@pytest.mark.parametrize("option", ["--de-identify", "--profile site.yaml", "--profile=site",
                                    "--deid-profile minimal", "--deid-profile=minimal"])
def test_command_that_would_de_identify_again_is_refused_before_any_call(
        tmp_path, monkeypatch, verified, option):
    verified()
    with pytest.raises(PipelineError, match="de-identify the files again"):
        upload(tmp_path, monkeypatch, template=f"{INGEST_18} {option}")
    assert not (tmp_path / "calls.jsonl").exists()
    assert not (tmp_path / "record.json").exists()


def test_refused_options_are_told_apart_from_lookalikes_and_stop_the_run_at_start():
    assert template_problems(f"{INGEST_18} --deid-profiles-dir x --profiled") == []
    assert template_problems(INGEST_18) == template_problems(IMPORT_17) == []
    shipped = yaml.safe_load((REPO / "config.yaml").read_text())
    assert shipped["upload_command"] == IMPORT_17  # the default is the documented command
    normalise_config(shipped, [])
    with pytest.raises(PipelineError, match="holds '--de-identify'"):
        normalise_config({**shipped, "upload_command": f"{IMPORT_17} --de-identify"}, [])


def test_cli_that_hangs_after_a_fatal_message_is_stopped_with_its_workers(
        tmp_path, monkeypatch, verified):
    verified()
    monkeypatch.setattr(upload_module, "FATAL_GRACE_SECONDS", 1)
    monkeypatch.setenv("FAKE_FW_NO_LOGIN", "1")
    monkeypatch.setenv("FAKE_FW_WORKER_PID", str(tmp_path / "worker.pid"))
    started = time.monotonic()
    with pytest.raises(PipelineError, match=r"not logged in on this computer: run `fw login`.*"
                                            r"stopped 1 s after saying so"):
        upload(tmp_path, monkeypatch, template=INGEST_18, timeout=120)
    assert time.monotonic() - started < 60  # not the whole timeout
    worker = int((tmp_path / "worker.pid").read_text())
    with pytest.raises(ProcessLookupError):  # the CLI's worker did not outlive the call
        for _ in range(50):
            os.kill(worker, 0)
            time.sleep(0.1)
    assert not (tmp_path / "record.json").exists()


@pytest.mark.parametrize("line,fails", [
    ("Traceback (most recent call last):", True),
    ("ERROR - upload of a file was rejected", True),
    ("Error: the server closed the connection", True),
    ("Finished: 3 errors", True),
    ("12 failed", True),
    ("1 failure", True),
    ("Not logged in, please login using `fw login` and your API key", True),
    ("401 Unauthorized", True),
    ("Invalid API key", True),
    ("Permission denied", True),
    # Controls: lines an upload that went well prints.
    ("Finished: 0 errors", False),
    ("Uploading files: 100% (2 of 2)", False),
    ("No errors were found in the audit", False),
    ("Series errored-free-import", False),
])
def test_each_built_in_error_pattern_fails_an_upload_that_exits_zero(
        tmp_path, monkeypatch, verified, line, fails):
    verified()
    monkeypatch.setenv("FAKE_FW_PRINT", line)
    if fails:
        with pytest.raises(PipelineError, match="exited 0 but its output reports an error"):
            upload(tmp_path, monkeypatch)
        assert not (tmp_path / "record.json").exists()
    else:
        assert upload(tmp_path, monkeypatch)["uploaded"] is True
