"""The approvals sheet: a person's decision on each warned session, approve or reject.

A warning means a person must look, so (unless ``upload_warned`` is true) a warned session is
uploaded only once someone has approved it. Each decision is one line of a tab-separated UTF-8
sheet (setting ``approvals``, ``approvals.tsv`` by default) with a header row and the columns
``group, project, subject, session, decision, by, when, report_sha256``:

- ``decision``: ``approve`` or ``reject``;
- ``by``: the reviewer's name or initials;
- ``when``: ISO 8601 with a time zone (``2025-05-01T14:30:00+02:00`` or ``...Z``);
- ``report_sha256``: sha256 of the session's verification report file at the time of the
  decision. A decision holds only for that report: a session staged and verified again needs
  a new one.

``deidpipe approve`` appends lines; a person may also write them by hand (columns in any order,
extra columns such as notes are kept, blank lines are skipped). The line furthest down for a
session and its current report wins. The sheet holds labels and reviewer names only, never an
identifier: a session whose label holds one cannot be approved.

Messages name the sheet, the line and the column; they never repeat a label's value.
"""

import csv
import datetime
import fcntl
import io
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deidpipe.errors import PipelineError, join_problems
from deidpipe.files import (
    OWNER_ONLY_FILE,
    make_private_dir,
    read_json,
    sha256_file,
    write_private_bytes,
)
from deidpipe.schema import GROUP_ID_RULE
from deidpipe.sheet import label_is_valid

APPROVAL_COLUMNS = ("group", "project", "subject", "session", "decision", "by", "when",
                    "report_sha256")
LABEL_KEYS = ("group", "project", "subject", "session")
DECISION_WORDS = {"approve": "approve", "approved": "approve",
                  "reject": "reject", "rejected": "reject"}
SHA256 = re.compile(r"[0-9a-f]{64}")
UPLOAD_HINT = "snakemake --cores 4 --config upload=true"
MAX_REVIEWER = 100


@dataclass(frozen=True)
class Decision:
    """One valid line of the approvals sheet."""

    line: int
    group: str
    project: str
    subject: str
    session: str
    decision: str  # "approve" or "reject"
    by: str
    when: str  # as written: ISO 8601 with a time zone
    report_sha256: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.group, self.project, self.subject, self.session)

    @property
    def shown(self) -> str:
        """``approved by X on DATE`` / ``rejected by X on DATE``."""
        verb = "approved" if self.decision == "approve" else "rejected"
        return f"{verb} by {self.by} on {shown_time(self.when)}"


@dataclass(frozen=True)
class Review:
    """Where a warned session stands: ``approved``, ``rejected``, ``waiting`` (no decision) or
    ``stale`` (the latest decision was for an earlier verification report)."""

    state: str
    decision: Decision | None = None


def shown_time(when: str) -> str:
    """``2025-05-01 14:30+02:00`` for an ISO 8601 time (as written if it cannot be read)."""
    try:
        return datetime.datetime.fromisoformat(when).isoformat(sep=" ", timespec="minutes")
    except ValueError:
        return when


def approve_command(subject: str, session: str, group: str | None = None,
                    project: str | None = None) -> str:
    """The command a reviewer types (``--group``/``--project`` only when they are needed)."""
    command = f"deidpipe approve {subject} {session} --by NAME"
    if group is not None and project is not None:
        command += f" --group {group} --project {project}"
    return command


# ---- reading -----------------------------------------------------------------------------------

def _label_problem(column: str, value: str) -> str | None:
    """What is wrong with a label cell, without repeating it; None when it is a valid label."""
    if value == "":
        return "is empty"
    if not label_is_valid(column, value):
        if column == "group":
            return GROUP_ID_RULE
        return ("is not a valid label (letters A-Z and a-z, digits, '.', '_' and '-', as in "
                "sessions.tsv)")
    return None


def _shown(text: str, limit: int = 40) -> str:
    """A cell for a message: control characters escaped, long text shortened."""
    shown = "".join(char if char.isprintable() else f"\\u{ord(char):04x}" for char in text)
    return repr(shown if len(shown) <= limit else shown[:limit] + "...")


def reviewer_problem(value: str) -> str | None:
    """What is wrong with a reviewer's name, or None."""
    if value == "":
        return "is empty: give the reviewer's name or initials"
    if any(not char.isprintable() for char in value):
        return "holds a tab, line break or control character"
    if len(value) > MAX_REVIEWER:
        return f"is longer than {MAX_REVIEWER} characters: give a name or initials"
    return None


def _time_problem(value: str) -> str | None:
    example = "write it like 2025-05-01T14:30:00+02:00 or 2025-05-01T12:30:00Z"
    if value == "":
        return f"is empty; {example}"
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return f"{_shown(value)} is not an ISO 8601 date and time; {example}"
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        return f"{_shown(value)} has no time zone; {example}"
    return None


def _cell_problem(column: str, value: str) -> str | None:
    if column in LABEL_KEYS:
        return _label_problem(column, value)
    if value == "":
        return "is empty" + ("; give the reviewer's name or initials" if column == "by" else "")
    if column == "decision":
        if value.lower() not in DECISION_WORDS:
            return f"{_shown(value)} is neither approve nor reject"
        return None
    if column == "by":
        return reviewer_problem(value)
    if column == "when":
        return _time_problem(value)
    if column == "report_sha256" and not SHA256.fullmatch(value.lower()):
        return (f"{_shown(value)} is not a sha256 (64 hexadecimal digits) of the session's "
                "verification report")
    return None


def _decode(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise PipelineError(f"approvals sheet {path} line {line} is not UTF-8 text (a "
                            "character saved in another encoding); save the sheet again as "
                            "tab-separated UTF-8") from None


def _records(text: str, path: Path) -> list[tuple[int, list[str]]]:
    """(line number, cells) of each non-blank line."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t")
    records = []
    try:
        for cells in reader:
            records.append((reader.line_num, [cell.strip() for cell in cells]))
    except csv.Error as error:
        raise PipelineError(f"approvals sheet {path} line {reader.line_num}: cannot be read as "
                            f"tab-separated text ({error}; is a quote mark (\") never closed?)"
                            ) from None
    return [(number, cells) for number, cells in records if any(cells)]


def _header(records: list[tuple[int, list[str]]], path: Path) -> list[str]:
    number, header = records[0]
    while header and header[-1] == "":
        header.pop()
    problems = []
    for index, column in enumerate(header, start=1):
        if column == "":
            problems.append(f"column {index} has no name")
        elif column in header[:index - 1]:
            problems.append(f"column {index} ({column}) appears twice")
    missing = [column for column in APPROVAL_COLUMNS if column not in header]
    if missing:
        hint = ("; column names are written in lower case"
                if any(column.lower() in missing for column in header) else "")
        problems.append(f"the header lacks the column(s) {', '.join(missing)} (the first line "
                        f"must name the columns {', '.join(APPROVAL_COLUMNS)}, separated by "
                        f"tabs{hint})")
    if problems:
        raise PipelineError(join_problems(f"approvals sheet {path} line {number} (the header):",
                                          problems))
    return header


def parse_approvals(text: str, path: str | Path) -> list[Decision]:
    """The decisions of an approvals sheet's text, in line order; PipelineError naming every
    malformed line (line and column)."""
    path = Path(path)
    records = _records(text, path)
    if not records:
        return []
    header = _header(records, path)
    problems = []
    decisions = []
    for number, cells in records[1:]:
        if len(cells) > len(header) and any(cells[len(header):]):
            problems.append(f"line {number}, column {len(header) + 1}: the line has "
                            f"{len(cells)} cells but the header has {len(header)} columns "
                            "(a stray tab?)")
            continue
        values = dict(zip(header, cells + [""] * (len(header) - len(cells)), strict=False))
        line_problems = [
            f"line {number}, column {header.index(column) + 1} ({column}): {problem}"
            for column in APPROVAL_COLUMNS
            if (problem := _cell_problem(column, values[column])) is not None]
        if line_problems:
            problems.extend(line_problems)
            continue
        decisions.append(Decision(
            line=number, **{key: values[key] for key in LABEL_KEYS},
            decision=DECISION_WORDS[values["decision"].lower()], by=values["by"],
            when=values["when"], report_sha256=values["report_sha256"].lower()))
    if problems:
        raise PipelineError(join_problems(
            f"approvals sheet {path} has {len(problems)} problem(s) (fix or delete those lines; "
            "'deidpipe approve' writes correct ones):", problems))
    return decisions


def read_approvals(path: str | Path | None) -> list[Decision]:
    """The decisions of the approvals sheet at ``path``; none if it does not exist."""
    if path is None or str(path) == "":
        return []
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except IsADirectoryError:
        raise PipelineError(f"approvals sheet {path} is a folder, not a file") from None
    except PermissionError:
        raise PipelineError(f"approvals sheet {path} cannot be read (permission denied)"
                            ) from None
    return parse_approvals(_decode(raw, path), path)


def decided_sessions(path: str | Path | None) -> set[tuple[str, str, str, str]]:
    """(group, project, subject, session) of every session with a line in the sheet."""
    return {decision.key for decision in read_approvals(path)}


def review_of(decisions: Iterable[Decision], key: tuple[str, str, str, str],
              report_sha256: str) -> Review:
    """The review state of one session whose verification report has ``report_sha256``."""
    mine = [decision for decision in decisions if decision.key == key]
    current = [decision for decision in mine if decision.report_sha256 == report_sha256]
    if current:
        latest = current[-1]
        return Review("approved" if latest.decision == "approve" else "rejected", latest)
    if mine:
        return Review("stale", mine[-1])
    return Review("waiting")


# ---- writing -----------------------------------------------------------------------------------

def _line_of(values: dict[str, str], header: list[str], line_end: str) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter="\t", lineterminator=line_end).writerow(
        [values.get(column, "") for column in header])
    return buffer.getvalue()


def append_decision(path: str | Path, values: dict[str, str]) -> int:
    """Append one decision line (header first if the sheet is new); return its line number.

    The sheet is rewritten whole under a temporary name and renamed into place (never half
    written), owner-only, while an exclusive lock on it keeps two reviewers from losing each
    other's line. The sheet is checked first: a malformed sheet is not appended to.
    """
    path = Path(path)
    make_private_dir(path.parent)
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, OWNER_ONLY_FILE)
        with os.fdopen(descriptor, "r+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                if os.fstat(handle.fileno()).st_ino != os.stat(path).st_ino:
                    continue  # another writer replaced the file meanwhile: lock the new one
            except FileNotFoundError:
                continue
            raw = handle.read()
            text = _decode(raw, path)
            parse_approvals(text, path)
            records = _records(text, path)
            line_end = "\r\n" if text.split("\n", 1)[0].endswith("\r") else "\n"
            if records:
                header = _header(records, path)
                prefix = raw if raw.endswith(b"\n") or not raw else raw + line_end.encode()
            else:
                header = list(APPROVAL_COLUMNS)
                prefix = ("\t".join(header) + line_end).encode("utf-8")
            write_private_bytes(path, prefix + _line_of(values, header, line_end).encode())
            return prefix.decode("utf-8").count("\n") + 1


# ---- the approve command -----------------------------------------------------------------------

def load_config(config_path: str | Path) -> dict[str, Any]:
    """config.yaml read and checked as the pipeline does (defaults filled in)."""
    from deidpipe.config import normalise_config

    config_path = Path(config_path)
    try:
        text = config_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineError(f"{config_path} does not exist: run the command in the project "
                            "folder (where config.yaml is), or give --config PATH") from None
    except (OSError, UnicodeDecodeError) as error:
        raise PipelineError(f"{config_path} cannot be read ({error})") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PipelineError(f"{config_path} is not valid YAML ({error})") from None
    if not isinstance(loaded, dict):
        raise PipelineError(f"{config_path} does not hold settings (key: value lines)")
    return normalise_config(loaded)


def _place(config: dict[str, Any], subject: str, session: str, group: str | None,
           project: str | None) -> tuple[str, str]:
    """Group and project: as given, else the sheet row of this subject and session, else the
    config's."""
    if group is not None and project is not None:
        return group, project
    from deidpipe.sheet import load_sheet

    try:
        rows = load_sheet(config["sessions"], config["group"], config["project"],
                          check_paths=False)
    except PipelineError:
        rows = []  # the pipeline says what is wrong with the sheet; the defaults apply here
    matches = sorted({(row.group, row.project) for row in rows
                      if (row.subject, row.session) == (subject, session)
                      and group in (None, row.group) and project in (None, row.project)})
    if len(matches) > 1:
        places = ", ".join("/".join(match) for match in matches)
        raise PipelineError(f"{subject}/{session} is in sessions.tsv more than once ({places}): "
                            "give --group and --project")
    if matches:
        return matches[0]
    return group or config["group"], project or config["project"]


def approve(*, subject: str, session: str, by: str, reject: bool = False,
            group: str | None = None, project: str | None = None,
            config_path: str | Path = "config.yaml") -> list[str]:
    """Record a decision on a warned session; return what to print. PipelineError if the
    session cannot be approved (not verified, passed, failed, a label holds an identifier)."""
    for name, value in (("SUBJECT", subject), ("SESSION", session), ("--group", group),
                        ("--project", project)):
        column = name.lower().lstrip("-")
        if value is not None and (problem := _label_problem(column, value)):
            raise PipelineError(f"{name} {problem}")
    by = by.strip()
    if problem := reviewer_problem(by):
        raise PipelineError(f"--by {problem}")
    config = load_config(config_path)
    group, project = _place(config, subject, session, group, project)
    labels = {"group": group, "project": project, "subject": subject, "session": session}
    where = "/".join(labels[key] for key in LABEL_KEYS)
    report_path = Path(config["results"]) / "verify" / group / project / subject / f"{session}.json"
    if not report_path.is_file():
        raise PipelineError(
            f"{where} has not been verified (there is no {report_path}): there is nothing to "
            "approve yet. Run the pipeline (snakemake --cores 4) first. If the session's row of "
            "sessions.tsv names another group or project, give --group and --project.")
    report_sha256 = sha256_file(report_path)
    report = read_json(report_path)
    shown_labels = report.get("session") or {}
    if any(shown_labels.get(key, labels[key]) != labels[key] for key in LABEL_KEYS):
        raise PipelineError(
            "the verification report of this session withholds its label because it holds an "
            "identifier of the source, so the session cannot be approved (the approvals sheet "
            "never holds an identifier). Give the session another label in sessions.tsv and "
            "run the pipeline again.")
    status = report.get("status")
    if status == "pass":
        raise PipelineError(f"{where} passed verification: there is nothing to approve. It is "
                            f"uploaded with: {UPLOAD_HINT}")
    if status == "fail":
        raise PipelineError(
            f"{where} failed verification ({len(report.get('findings') or [])} finding(s)); a "
            "failed session cannot be approved. Read its findings in the run's report.html or "
            f"in {report_path}, fix the source or the profile, and run the pipeline again.")
    if status != "warn":
        raise PipelineError(f"{report_path} has no verification status pass, warn or fail: "
                            "verify the session again (run the pipeline)")
    approvals_path = Path(config["approvals"])
    earlier = review_of(read_approvals(approvals_path), tuple(labels.values()), report_sha256)
    when = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    decision = "reject" if reject else "approve"
    line = append_decision(approvals_path, {**labels, "decision": decision, "by": by,
                                            "when": when, "report_sha256": report_sha256})
    verb = "rejected" if reject else "approved"
    lines = [f"{verb} {where} as {by} on {shown_time(when)}, for its verification report "
             f"{report_path} (sha256 {report_sha256[:12]}...): line {line} of {approvals_path}."]
    if earlier.decision is not None and earlier.state in ("approved", "rejected"):
        lines.append(f"This replaces the earlier decision (line {earlier.decision.line}: "
                     f"{earlier.decision.shown}).")
    if reject:
        from deidpipe.upload import read_ledger

        uploads = read_ledger(Path(config["ledger"]), labels)
        if uploads:
            lines.append(f"It was already uploaded on {uploads[-1]['time']} (see "
                         f"{config['ledger']}): a rejection does not remove it from Flywheel; "
                         "delete it there if it must not be shared.")
        else:
            lines.append("It will not be uploaded.")
        lines.append(f"To approve it after all: {approve_command(subject, session)} (the "
                     "latest line counts).")
        return lines
    lines.append("If the session is staged and verified again, it needs a new approval.")
    if config["upload_warned"]:
        lines.append("(upload_warned is true in the config: warned sessions are uploaded "
                     "without approval anyway.)")
    lines.append(f"To upload it: {UPLOAD_HINT}")
    return lines
