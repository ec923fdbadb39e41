"""Read and validate the session sheet (sessions.tsv) before anything is staged or uploaded.

Rows are numbered as a spreadsheet shows them: the header is row 1, the first session row 2.
"""

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from deidpipe.errors import PipelineError, join_problems
from deidpipe.schema import load_schema, schema_problems

LABEL_COLUMNS = ("group", "project", "subject", "session")


@dataclass(frozen=True)
class SessionRow:
    """One validated row: where a session's DICOM files are and where they go in Flywheel."""

    row: int
    group: str
    project: str
    subject: str
    session: str
    dicom_dir: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.group, self.project, self.subject, self.session)

    @property
    def path(self) -> str:
        """``group/project/subject/session``: the session's place below staging and results."""
        return "/".join(self.key)


def _read_rows(sheet_path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    try:
        # utf-8-sig drops the byte-order mark spreadsheet programs write; newline="" keeps CRLF
        # handling to the csv module.
        with open(sheet_path, encoding="utf-8-sig", newline="") as handle:
            lines = list(csv.reader(handle, delimiter="\t"))
    except FileNotFoundError:
        raise PipelineError(f"session sheet {sheet_path} does not exist") from None
    except UnicodeDecodeError as error:
        raise PipelineError(
            f"session sheet {sheet_path} is not UTF-8 text (byte {error.start}); "
            "save it as 'UTF-8' or 'Tab delimited text'"
        ) from None
    except (OSError, csv.Error) as error:
        raise PipelineError(f"session sheet {sheet_path} cannot be read: {error}") from None
    numbered = [(number, [cell.strip() for cell in cells])
                for number, cells in enumerate(lines, start=1)]
    # Blank lines keep their number but are not sessions.
    numbered = [(number, cells) for number, cells in numbered if any(cells)]
    if not numbered:
        raise PipelineError(f"session sheet {sheet_path} is empty: it needs a header row "
                            "with the columns subject, session, dicom_dir")
    header_number, header = numbered[0]
    if header_number != 1:
        raise PipelineError(f"{sheet_path} row 1: the first row must be the header")
    return header, numbered[1:]


def _check_header(sheet_path: Path, header: list[str]) -> None:
    problems = []
    seen: set[str] = set()
    for column in header:
        if column in seen:
            problems.append(f"row 1: column '{column}' appears twice")
        seen.add(column)
    if "" in header:
        problems.append(f"row 1: column {header.index('') + 1} has no name")
    required = load_schema("sessions")["required"]
    missing = [column for column in required if column not in header]
    if missing:
        problems.append(f"row 1: the header lacks the column(s) {', '.join(missing)} "
                        f"(required: {', '.join(required)}; the columns are separated by tabs)")
    if problems:
        raise PipelineError(join_problems(f"session sheet {sheet_path}:", problems))


def _check_dicom_dir(dicom_dir: Path) -> str | None:
    """Cheap checks of one folder (a stat and at most one directory entry); None when fine."""
    try:
        if not dicom_dir.is_dir():
            return "is not a folder" if dicom_dir.exists() else "does not exist"
        with os.scandir(dicom_dir) as entries:
            if next(entries, None) is None:
                return "is an empty folder"
    except PermissionError:
        return "cannot be read (permission denied)"
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    return None


def load_sheet(
    sheet_path: str | Path,
    default_group: str,
    default_project: str,
    check_paths: bool = True,
) -> list[SessionRow]:
    """Read, validate and return the sheet's sessions; raise PipelineError naming every problem.

    ``check_paths`` looks at each ``dicom_dir`` (one stat and one directory entry per row);
    cluster jobs that re-read the sheet can skip it.
    """
    sheet_path = Path(sheet_path)
    header, rows = _read_rows(sheet_path)
    _check_header(sheet_path, header)
    if not rows:
        raise PipelineError(f"session sheet {sheet_path} has a header but no sessions")
    sheet_dir = sheet_path.resolve().parent
    problems: list[str] = []
    sessions: list[SessionRow] = []
    first_row_of: dict[tuple[str, str, str, str], int] = {}
    for number, cells in rows:
        if len(cells) > len(header) and any(cells[len(header):]):
            problems.append(f"row {number}: has {len(cells)} cells but the header has "
                            f"{len(header)} columns (a stray tab?)")
            continue
        values = dict(zip(header, cells + [""] * (len(header) - len(cells)), strict=True))
        for column in ("group", "project"):
            if column in values and values[column] == "":
                del values[column]  # empty override: use the config's value
        row_problems = schema_problems(values, "sessions")
        problems.extend(f"row {number}, column '{column}': {problem}"
                        for column, problem in row_problems)
        if any(column == "dicom_dir" for column, _ in row_problems):
            continue
        dicom_dir = (sheet_dir / values["dicom_dir"]).resolve()
        dir_problem = _check_dicom_dir(dicom_dir) if check_paths else None
        if dir_problem:
            problems.append(f"row {number}, column 'dicom_dir': {values['dicom_dir']} "
                            f"{dir_problem}")
        if row_problems or dir_problem:
            continue
        session = SessionRow(
            row=number,
            group=values.get("group", default_group),
            project=values.get("project", default_project),
            subject=values["subject"],
            session=values["session"],
            dicom_dir=str(dicom_dir),
        )
        if session.key in first_row_of:
            problems.append(f"row {number}: the same group, project, subject and session as "
                            f"row {first_row_of[session.key]} ({session.path})")
            continue
        first_row_of[session.key] = number
        sessions.append(session)
    if problems:
        raise PipelineError(join_problems(
            f"session sheet {sheet_path} has {len(problems)} problem(s); nothing was run:",
            problems))
    return sessions
