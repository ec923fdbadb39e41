"""Upload one verified, staged session with the Flywheel CLI; keep an append-only ledger.

An upload record is written only when the upload succeeded, was blocked by verification or is
held for a person's review, so a failed CLI call is retried by the next run. The ledger, kept
outside Snakemake's outputs, stops a session from being uploaded twice (after --forceall or a
deleted results folder).

A warned session waits for a person (unless ``upload_warned`` is true): it is uploaded only
when the approvals sheet (``deidpipe.approvals``) approves its current verification report.
A rejection stops the upload whatever ``upload_warned`` says.
"""

import datetime
import fcntl
import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

from deidpipe.approvals import Review, approve_command, read_approvals, review_of
from deidpipe.errors import PipelineError
from deidpipe.files import (
    OWNER_ONLY_FILE,
    files_below,
    make_private_dir,
    read_json,
    sha256_file,
    write_json,
)
from deidpipe.manifest import Manifest, read_manifest
from deidpipe.paths import staged_dir_beside

# Output lines of the Flywheel CLI that mean a failure even when it exits 0.
DEFAULT_ERROR_PATTERNS = (
    r"^\s*(?:ERROR|Error|error)\b",
    r"Traceback \(most recent call last\)",
    r"\b[1-9][0-9]* (?:errors?|failed|failures)\b",
    r"(?i)\b(?:not logged in|unauthorized|invalid api key|permission denied)\b",
)

LABEL_KEYS = ("group", "project", "subject", "session")


def build_command(template: str, values: dict[str, str]) -> list[str]:
    """Split the template like a shell would, then fill each word (no shell, no quoting bugs)."""
    try:
        return [word.format(**values) for word in shlex.split(template)]
    except (KeyError, IndexError, ValueError) as error:
        raise PipelineError(
            f"setting 'upload_command' cannot be used ({error}); allowed placeholders: "
            + ", ".join("{" + key + "}" for key in sorted(values))) from None


def check_staged_files(staged_session_dir: Path, manifest: Manifest,
                       manifest_path: Path) -> None:
    """Refuse when the staged files are not exactly those verified (edited, added, removed)."""
    listed = {entry.staged: entry.sha256 for entry in manifest.files}
    on_disk = files_below(staged_session_dir)
    problems = [f"{name}: added after verification" for name in sorted(on_disk - set(listed))]
    problems += [f"{name}: missing" for name in sorted(set(listed) - on_disk)]
    problems += [f"{name}: changed after verification"
                 for name in sorted(on_disk & set(listed))
                 if sha256_file(staged_session_dir / name) != listed[name]]
    if problems:
        raise PipelineError(
            f"staged session {staged_session_dir} is not what was verified, so it is not "
            "uploaded:\n" + "\n".join(f"  - {problem}" for problem in problems)
            + f"\nTo re-stage and re-verify it, delete {manifest_path} and run the pipeline again.")


def read_ledger(ledger_path: Path, labels: dict[str, str]) -> list[dict[str, Any]]:
    """The ledger lines of one session, oldest first."""
    if not ledger_path.exists():
        return []
    entries = []
    with open(ledger_path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                raise PipelineError(f"upload ledger {ledger_path} line {number} is damaged; "
                                    "restore it from a backup before uploading") from None
            if all(entry.get(key) == labels[key] for key in LABEL_KEYS):
                entries.append(entry)
    return entries


def append_ledger(ledger_path: Path, entry: dict[str, Any]) -> None:
    """Append one line, locked and flushed to disk, owner-only."""
    make_private_dir(ledger_path.parent)
    descriptor = os.open(ledger_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, OWNER_ONLY_FILE)
    with os.fdopen(descriptor, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(json.dumps(entry, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def reported_error(log_path: Path, offset: int, patterns: tuple[str, ...]) -> int | None:
    """Line number (in the CLI log) of the first line of this call's output that reports an
    error, or None. The Flywheel CLI can exit 0 after printing errors (a failed file in an
    import, an expired login)."""
    compiled = [re.compile(pattern) for pattern in patterns]
    with open(log_path, "rb") as log:
        lines_before = log.read(offset).count(b"\n")
        for number, raw_line in enumerate(log, start=lines_before + 1):
            line = raw_line.decode("utf-8", "replace")
            if any(pattern.search(line) for pattern in compiled):
                return number
    return None


def review_hold(review: Review, labels: dict[str, str], report: dict[str, Any],
                verify_report_path: str | Path, approvals_path: str | Path | None,
                upload_warned: bool) -> dict[str, str] | None:
    """``held`` (why, in a word) and ``reason`` when a warned session must not be uploaded;
    None when it may be (approved, or ``upload_warned`` and not rejected)."""
    decision = review.decision
    if review.state == "approved":
        return None
    if review.state == "rejected" and decision is not None:
        return {"held": "rejected",
                "reason": f"{decision.shown} (approvals sheet {approvals_path} line "
                          f"{decision.line})"}
    if upload_warned:
        return None
    findings = f"verification warned ({len(report['findings'])} finding(s))"
    shown_labels = report.get("session") or {}
    if any(shown_labels.get(key, labels[key]) != labels[key] for key in LABEL_KEYS):
        # The report withholds a label that holds an identifier: it is not repeated here, and
        # it may not go into the approvals sheet.
        return {"held": "withheld",
                "reason": f"held: waiting for review: {findings}, but a label of this session "
                          "holds an identifier, so it cannot be approved; give the session "
                          "another label in sessions.tsv and run again"}
    command = f"`{approve_command(labels['subject'], labels['session'])}`"
    if review.state == "stale" and decision is not None:
        verb = "approval" if decision.decision == "approve" else "rejection"
        return {"held": "stale",
                "reason": f"held: the {verb} (line {decision.line} of {approvals_path}: "
                          f"{decision.shown}) was for an earlier verification and no longer "
                          "applies: the session was staged and verified again since. Read its "
                          f"warnings in {verify_report_path} again, then run {command}"}
    return {"held": "waiting",
            "reason": f"held: waiting for review: {findings}; a person must read the warnings "
                      f"in {verify_report_path} (or the run's report.html), then run {command}"}


def upload_session(
    *,
    labels: dict[str, str],
    verify_report_path: str | Path,
    manifest_path: str | Path,
    staged_session_dir: str | Path | None = None,
    record_path: str | Path,
    log_path: str | Path,
    fw: str,
    command_template: str,
    extra_env: dict[str, str],
    timeout: int,
    ledger_path: str | Path,
    reupload: bool = False,
    upload_warned: bool = True,
    approvals_path: str | Path | None = None,
    extra_error_patterns: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Gate, re-check and upload one session; write its record. Raise PipelineError on failure.

    A warned session is gated by the approvals sheet at ``approvals_path`` (None: no decision
    was made): see ``review_hold``. The staged folder is the one beside the manifest unless
    ``staged_session_dir`` says otherwise."""
    staged_session_dir = Path(staged_session_dir or staged_dir_beside(manifest_path))
    ledger_path = Path(ledger_path)
    where = "/".join(labels[key] for key in LABEL_KEYS)
    report = read_json(verify_report_path)
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    if report["status"] == "fail":
        record = {"uploaded": False, "time": now,
                  "reason": "blocked: verification failed "
                            f"({len(report['findings'])} finding(s)); see {verify_report_path}"}
        write_json(record_path, record)
        return record
    approval: dict[str, Any] = {}
    manifest_sha256 = sha256_file(manifest_path)
    earlier = read_ledger(ledger_path, labels)
    if report["status"] == "warn":
        review = review_of(read_approvals(approvals_path),
                           tuple(labels[key] for key in LABEL_KEYS),
                           sha256_file(verify_report_path))
        hold = review_hold(review, labels, report, verify_report_path, approvals_path,
                           upload_warned)
        if hold is not None:
            same = [entry for entry in earlier if entry["manifest_sha256"] == manifest_sha256]
            if same and not reupload:
                # These staged files are in Flywheel already: say so rather than "held".
                record = {"uploaded": True, "time": same[-1]["time"],
                          "command": same[-1]["command"], "exit_code": 0,
                          "files": same[-1]["files"], "manifest_sha256": manifest_sha256,
                          "note": f"uploaded by an earlier run (ledger {ledger_path}); not "
                                  f"sent again. It would not be sent now: {hold['reason']}"}
            else:
                record = {"uploaded": False, "time": now, **hold}
            write_json(record_path, record)
            return record
        if review.decision is not None and review.state == "approved":
            approval = {"approved_by": review.decision.by,
                        "approved_when": review.decision.when,
                        "approval": f"line {review.decision.line} of {approvals_path}"}
    manifest = read_manifest(manifest_path)
    if earlier and not reupload:
        last = earlier[-1]
        if last["manifest_sha256"] != manifest_sha256:
            raise PipelineError(
                f"session {where} was already uploaded on {last['time']} with other staged "
                f"files (see {ledger_path}); it is not uploaded again. If you mean to replace "
                "it (for example after deleting it in Flywheel), run with "
                "--config reupload=true.")
        # The same staged files went up before (results deleted, or --forceall): say so.
        record = {"uploaded": True, "time": last["time"], "command": last["command"],
                  "exit_code": 0, "files": last["files"], "manifest_sha256": manifest_sha256,
                  "note": f"uploaded by an earlier run (ledger {ledger_path}); not sent again",
                  **approval}
        write_json(record_path, record)
        return record
    check_staged_files(staged_session_dir, manifest, Path(manifest_path))
    command = build_command(command_template, {
        "fw": fw, "staged_session_dir": str(staged_session_dir), **labels})
    make_private_dir(Path(log_path).parent)
    with open(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, OWNER_ONLY_FILE),
              "a", encoding="utf-8") as log:
        log.write(f"[{now}] running: {shlex.join(command)}\n")
        start_of_call = log.tell()
        log.flush()
        try:
            completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env={**os.environ, **extra_env},
                                       timeout=timeout, check=False)
        except FileNotFoundError:
            raise PipelineError(f"session {where}: the Flywheel CLI '{command[0]}' was not "
                                "found; set 'fw' in config.yaml") from None
        except subprocess.TimeoutExpired:
            raise PipelineError(f"session {where}: the upload did not finish within {timeout} "
                                f"s and was stopped; see {log_path}. It is retried by the "
                                "next run.") from None
    if completed.returncode != 0:
        raise PipelineError(f"session {where}: the upload command failed (exit code "
                            f"{completed.returncode}); see {log_path}. It is retried by the "
                            "next run.")
    error_line = reported_error(Path(log_path), start_of_call,
                                (*DEFAULT_ERROR_PATTERNS, *extra_error_patterns))
    if error_line is not None:
        raise PipelineError(f"session {where}: the upload command exited 0 but its output "
                            f"reports an error (line {error_line} of {log_path}); it is not "
                            "counted as uploaded and is retried by the next run.")
    record = {"uploaded": True, "time": now, "command": command, "exit_code": 0,
              "files": len(manifest.files), "manifest_sha256": manifest_sha256, **approval}
    # Ledger first: if the run dies between the two writes, the ledger still prevents a repeat.
    append_ledger(ledger_path, {**labels, **record})
    write_json(record_path, record)
    return record
