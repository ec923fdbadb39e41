"""Upload one verified, staged session with the Flywheel CLI; keep an append-only ledger.

An upload record is written only when the upload succeeded, was blocked by verification or is
held for a person's review, so a failed CLI call is retried by the next run. The ledger, kept
outside Snakemake's outputs, stops a session from being uploaded twice (after --forceall or a
deleted results folder).

A warned session waits for a person (unless ``upload_warned`` is true): it is uploaded only
when the approvals sheet (``deidpipe.approvals``) approves its current verification report.
A rejection stops the upload whatever ``upload_warned`` says.
"""

import csv
import datetime
import fcntl
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from deidpipe.approvals import Review, approve_command, read_approvals, review_of
from deidpipe.config import template_problems
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
    r"\b[1-9][0-9]* (?:errors?|failed|failures?)\b",
    r"(?i)\b(?:not logged in|unauthorized|invalid api key|permission denied)\b",
)

LABEL_KEYS = ("group", "project", "subject", "session")

# What the CLI prints when it fails for a reason a person can fix, what to do about it, and
# whether the CLI can get past it (a missing or refused login it cannot).
KNOWN_CAUSES = (
    (re.compile(r"invalid choice: 'import'"),
     "this Flywheel CLI offers `fw import` only with FLYWHEEL_CLI_LEGACY=true: set it in "
     "'upload_env', or use its `fw ingest dicom` command (README, \"Uploads\")", False),
    (re.compile(r"invalid group_id value"),
     "the Flywheel CLI refuses the group id: Flywheel group ids have 2 to 32 characters, "
     "lower-case letters, digits, '.', '@', '_' or '-', and start and end with a letter or "
     "digit; correct the group in sessions.tsv or config.yaml", False),
    (re.compile(r"(?i)not logged in"),
     "the Flywheel CLI is not logged in on this computer: run `fw login` with your API key "
     "(as the user who runs the pipeline), then run the pipeline again", True),
    (re.compile(r"(?i)invalid api key|not authorized|unauthorized"),
     "Flywheel refused the CLI's login (the API key is not valid or has expired): run "
     "`fw login` again with a current API key, then run the pipeline again", True),
    # Not a file the CLI cannot read ('[Errno 13] Permission denied: ...').
    (re.compile(r"(?i)(?<!\] )permission denied|not enough permissions|forbidden"),
     "Flywheel refused the upload: the logged-in user may not add data to this group and "
     "project; ask the project's administrator for upload permission", False),
)


def build_command(template: str, values: dict[str, str]) -> list[str]:
    """Split the template like a shell would, then fill each word (no shell, no quoting bugs).
    A template that would de-identify again is refused."""
    problems = template_problems(template)
    if problems:
        raise PipelineError("; ".join(problems))
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
    audit_log = audit_log_beside(Path(log_path), now)
    uses_audit_log = "{audit_log}" in command_template
    command = build_command(command_template, {
        "fw": fw, "staged_session_dir": str(staged_session_dir), "audit_log": str(audit_log),
        **labels})
    make_private_dir(Path(log_path).parent)
    with open(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, OWNER_ONLY_FILE),
              "a", encoding="utf-8") as log:
        log.write(f"[{now}] running: {shlex.join(command)}\n")
        start_of_call = log.tell()
        log.flush()
        try:
            returncode = run_cli(command, log, Path(log_path), start_of_call,
                                 {**os.environ, **extra_env}, timeout)
        except FileNotFoundError:
            raise PipelineError(f"session {where}: the Flywheel CLI '{command[0]}' was not "
                                "found; set 'fw' in config.yaml") from None
        except subprocess.TimeoutExpired:
            raise PipelineError(f"session {where}: the upload did not finish within {timeout} "
                                f"s and was stopped; see {log_path}. It is retried by the "
                                "next run.") from None
        except CliGaveUp as gave_up:
            raise PipelineError(f"session {where}: the upload failed: {gave_up}. The CLI's "
                                f"output is in {log_path}; it was stopped {FATAL_GRACE_SECONDS}"
                                " s after saying so (it had not ended by itself); the session "
                                "is retried by the next run.") from None
    if returncode != 0:
        cause = known_cause(Path(log_path), start_of_call)
        raise PipelineError(f"session {where}: the upload failed"
                            + (f": {cause}" if cause else
                               f" (the Flywheel CLI's exit code was {returncode})")
                            + f". The CLI's output is in {log_path}; the session is retried by "
                            "the next run.")
    error_line = reported_error(Path(log_path), start_of_call,
                                (*DEFAULT_ERROR_PATTERNS, *extra_error_patterns))
    if error_line is not None:
        cause = known_cause(Path(log_path), start_of_call)
        raise PipelineError(f"session {where}: the upload command exited 0 but its output "
                            f"reports an error (line {error_line} of {log_path})"
                            + (f": {cause}" if cause else "")
                            + "; it is not counted as uploaded and is retried by the next run.")
    reported: dict[str, Any] = {}
    if uses_audit_log:
        reported = read_audit_log(audit_log)
        if reported["failed"]:
            raise PipelineError(
                f"session {where}: the Flywheel CLI exited 0 but its audit log ({audit_log}) "
                f"reports {reported['failed']} of {reported['entries']} entries not uploaded "
                f"(first: line {reported['first_failure_line']}, "
                f"{reported['first_failure']}); it is not counted as uploaded and is retried "
                "by the next run.")
    record = {"uploaded": True, "time": now, "command": command, "exit_code": 0,
              "files": len(manifest.files), "manifest_sha256": manifest_sha256, **approval}
    if uses_audit_log:
        record["audit_log"] = str(audit_log)
        record["cli_reported"] = {key: reported[key] for key in (
            "entries", "uploaded", "already_in_flywheel")}
    # Ledger first: if the run dies between the two writes, the ledger still prevents a repeat.
    append_ledger(ledger_path, {**labels, **record})
    write_json(record_path, record)
    return record


# After the CLI has printed a cause it cannot get past (no login), it is given this long to end
# by itself: flywheel-cli's ingest can leave a worker process waiting for ever.
FATAL_GRACE_SECONDS = 20
POLL_SECONDS = 0.2


class CliGaveUp(Exception):
    """The CLI printed a fatal cause and did not end: its cause, in words."""


def run_cli(command: list[str], log: Any, log_path: Path, start_of_call: int,
            env: dict[str, str], timeout: int) -> int:
    """Run the CLI with its output into the open ``log``; return its exit code. Raises
    subprocess.TimeoutExpired when it runs too long and CliGaveUp when it hangs after printing a
    fatal cause. Whatever way the call ends, no process the CLI started outlives it (its
    ingest leaves a worker behind when it fails). The CLI stays in the job's process group, so
    that a stopped job stops its upload too."""
    marker = secrets.token_hex(16)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, env={**env, CALL_MARKER: marker})
    started = time.monotonic()
    fatal_since: float | None = None
    scanned = start_of_call  # the output up to here holds no fatal cause
    try:
        while True:
            try:
                return process.wait(timeout=POLL_SECONDS)
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if now - started > timeout:
                raise subprocess.TimeoutExpired(command, timeout)
            if fatal_since is None:
                fatal, scanned = _fatal_cause_after(log_path, scanned)
                if fatal:
                    fatal_since = now
            elif now - fatal_since > FATAL_GRACE_SECONDS:
                raise CliGaveUp(known_cause(log_path, start_of_call))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        _stop_marked(marker)


def _fatal_cause_after(log_path: Path, offset: int) -> tuple[bool, int]:
    """Whether the CLI's whole lines written after ``offset`` name a fatal cause, and where
    the next look starts (after the last whole line): each poll reads only what is new."""
    with open(log_path, "rb") as log:
        log.seek(offset)
        new = log.read()
    end = new.rfind(b"\n") + 1
    text = new[:end].decode("utf-8", "replace")
    fatal = any(is_fatal and pattern.search(text) for pattern, _cause, is_fatal in KNOWN_CAUSES)
    return fatal, offset + end


# Set in the CLI's environment, one value per call: its worker processes inherit it, which is
# how they are found after the CLI has ended (they no longer descend from it by then).
CALL_MARKER = "DEIDPIPE_UPLOAD_CALL"


def _stop_marked(marker: str) -> None:
    """Stop every process of this user whose environment holds this call's marker."""
    needle = f"{CALL_MARKER}={marker}".encode()
    for signal_number in (signal.SIGTERM, signal.SIGKILL):
        found = []
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue  # ended meanwhile, or another user's
        for pid in found:
            try:
                os.kill(pid, signal_number)
            except (ProcessLookupError, PermissionError):
                pass
        if not found:
            return
        time.sleep(0.5)


def audit_log_beside(cli_log: Path, now: str) -> Path:
    """Where this upload's audit log goes: beside the CLI log, one file per attempt (the CLI
    refuses to overwrite one)."""
    stamp = re.sub(r"[^0-9A-Za-z]", "", now)
    name = cli_log.name.removesuffix(".log")
    path = cli_log.with_name(f"{name}.audit-{stamp}.csv")
    number = 1
    while path.exists():
        number += 1
        path = cli_log.with_name(f"{name}.audit-{stamp}-{number}.csv")
    return path


def known_cause(log_path: Path, offset: int) -> str:
    """What the CLI's output of this call says went wrong, in words a person can act on ('' if
    it names no known cause). The output's own lines are not repeated (they can hold paths)."""
    with open(log_path, "rb") as log:
        log.seek(offset)
        output = log.read().decode("utf-8", "replace")
    for pattern, cause, _fatal in KNOWN_CAUSES:
        if pattern.search(output):
            return cause
    return ""


# Audit log statuses (flywheel-cli 18.x ingest) of entries that are in Flywheel after the call.
UPLOADED_STATUSES = ("completed",)


def read_audit_log(path: Path) -> dict[str, Any]:
    """Count what the CLI's audit log reports: entries (files, or acquisitions packed into one
    upload), those uploaded, those already in Flywheel (skipped by --skip-existing) and those
    that failed or were skipped for another reason. Two formats: ``fw ingest``'s (src_path,
    dst_path, status, existing, error_code, ...) and ``fw import``'s (Source Path, Flywheel
    Path, Failed, Message)."""
    counts: dict[str, Any] = {"entries": 0, "uploaded": 0, "already_in_flywheel": 0,
                              "failed": 0, "first_failure": "", "first_failure_line": 0}
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise PipelineError(f"the Flywheel CLI exited 0 but wrote no audit log ({path}), so "
                            "what it uploaded is not known; it is not counted as uploaded and "
                            "is retried by the next run.") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise PipelineError(f"the Flywheel CLI's audit log {path} cannot be read ({error}); "
                            "the upload is not counted and is retried by the next run.") from None
    for line, row in enumerate(rows, start=2):
        if "status" in row:  # fw ingest
            status = (row.get("status") or "").strip().lower()
            existing = (row.get("existing") or "").strip().lower() == "true"
            error_code = (row.get("error_code") or "").strip()
            if status in UPLOADED_STATUSES and not error_code:
                outcome = "uploaded"
            elif existing and not error_code:
                outcome = "already_in_flywheel"
            else:
                outcome = "failed"
                why = f"status {status or 'none'}" + (f", error {error_code}" if error_code
                                                       else "")
        elif "Failed" in row:  # fw import
            if (row.get("Message") or "").strip() == "Begin import scan":
                continue  # the folder the import started from, not a file
            if (row.get("Failed") or "").strip().lower() == "true":
                outcome, why = "failed", "marked failed"
            elif (row.get("Message") or "").strip() == "Skipped existing":
                outcome = "already_in_flywheel"
            else:
                outcome = "uploaded"
        else:
            raise PipelineError(f"the Flywheel CLI's audit log {path} has columns this "
                                "pipeline does not know; the upload is not counted and is "
                                "retried by the next run.")
        counts["entries"] += 1
        counts[outcome] += 1
        if outcome == "failed" and not counts["first_failure"]:
            counts["first_failure"], counts["first_failure_line"] = why, line
    return counts
