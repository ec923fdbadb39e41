"""Upload one verified, staged session with the Flywheel CLI; keep an append-only ledger.

An upload record is written only when the upload succeeded or was blocked by verification, so
a failed CLI call is retried by the next run. The ledger, kept outside Snakemake's outputs,
stops a session from being uploaded twice (after --forceall or a deleted results folder).
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

from deidpipe.errors import PipelineError
from deidpipe.files import (
    OWNER_ONLY_FILE,
    files_below,
    make_private_dir,
    read_json,
    sha256_file,
    write_json,
)

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


def check_staged_files(staged_session_dir: Path, manifest: dict[str, Any],
                       manifest_path: Path) -> None:
    """Refuse when the staged files are not exactly those verified (edited, added, removed)."""
    listed = {entry["staged"]: entry["sha256"] for entry in manifest["files"]}
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


def upload_session(
    *,
    labels: dict[str, str],
    verify_report_path: str | Path,
    manifest_path: str | Path,
    staged_session_dir: str | Path,
    record_path: str | Path,
    log_path: str | Path,
    fw: str,
    command_template: str,
    extra_env: dict[str, str],
    timeout: int,
    ledger_path: str | Path,
    reupload: bool = False,
    upload_warned: bool = True,
    extra_error_patterns: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Gate, re-check and upload one session; write its record. Raise PipelineError on failure."""
    staged_session_dir = Path(staged_session_dir)
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
    if report["status"] == "warn" and not upload_warned:
        record = {"uploaded": False, "time": now,
                  "reason": "held: verification warned and 'upload_warned' is false "
                            f"({len(report['findings'])} finding(s)); see {verify_report_path}"}
        write_json(record_path, record)
        return record
    manifest = read_json(manifest_path)
    manifest_sha256 = sha256_file(manifest_path)
    earlier = read_ledger(ledger_path, labels)
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
                  "note": f"uploaded by an earlier run (ledger {ledger_path}); not sent again"}
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
              "files": len(manifest["files"]), "manifest_sha256": manifest_sha256}
    # Ledger first: if the run dies between the two writes, the ledger still prevents a repeat.
    append_ledger(ledger_path, {**labels, **record})
    write_json(record_path, record)
    return record
