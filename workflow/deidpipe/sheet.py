"""Read and validate the session sheet (sessions.tsv) before anything is staged or uploaded.

Rows are numbered as a spreadsheet shows them: the header is row 1, the first session row 2.
What spreadsheet programs write is accepted: a byte-order mark, UTF-16 with a byte-order mark
(Excel's "Unicode Text"), CRLF line ends, spaces around cells, blank lines, extra columns (such
as notes) and empty trailing columns. Everything else that is wrong is an error naming the row
and column; every problem of a sheet is reported at once, and nothing runs until it is valid.

Messages never repeat a label's value (a subject label can be an MRN typed by mistake); they
say what is wrong with it. Folder paths are repeated so that they can be found.
"""

import csv
import errno
import io
import os
import re
import stat
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from deidpipe.errors import PipelineError, join_problems
from deidpipe.paths import session_path
from deidpipe.schema import GROUP_ID_RULE, load_schema

LABEL_COLUMNS = ("group", "project", "subject", "session")
ALLOWED_LABEL_TEXT = "letters A-Z and a-z, digits, '.', '_' and '-'"
# Excel's "Unicode Text" export: UTF-16 with a byte-order mark.
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


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
        return session_path(*self.key)


def _read_text(sheet_path: Path) -> str:
    """The sheet's text, without a byte-order mark; PipelineError if it cannot be read."""
    try:
        raw = sheet_path.read_bytes()
    except FileNotFoundError:
        raise PipelineError(f"session sheet {sheet_path} does not exist") from None
    except IsADirectoryError:
        raise PipelineError(f"session sheet {sheet_path} is a folder, not a file") from None
    except PermissionError:
        raise PipelineError(f"session sheet {sheet_path} cannot be read (permission denied)"
                            ) from None
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or "not a readable file"
        raise PipelineError(f"session sheet {sheet_path} cannot be read ({reason})") from None
    if raw.startswith(UTF16_BOMS):
        try:
            return raw.decode("utf-16").removeprefix("\ufeff")
        except UnicodeDecodeError:
            raise PipelineError(
                f"session sheet {sheet_path} starts like UTF-16 text (Excel's 'Unicode Text') "
                "but is damaged; save it again") from None
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        raise PipelineError(_not_utf8_message(sheet_path, raw, error.start)) from None


def _not_utf8_message(sheet_path: Path, raw: bytes, start: int) -> str:
    """Name the line (and column, when the header can be read) of the first non-UTF-8 byte."""
    line_start = raw.rfind(b"\n", 0, start) + 1
    line = raw.count(b"\n", 0, start) + 1
    place = f"line {line}"
    if line > 1:
        header = raw[:raw.find(b"\n")].decode("utf-8", "replace").removeprefix("\ufeff")
        columns = [cell.strip().strip('"') for cell in header.rstrip("\r").split("\t")]
        index = raw.count(b"\t", line_start, start)
        if index < len(columns) and columns[index]:
            place += f", column '{_shown(columns[index])}'"
    return (f"session sheet {sheet_path} is not UTF-8 text: {place} holds a character saved in "
            "another encoding (such as an accented letter from Excel's 'Text (Tab delimited)'). "
            "Save the sheet again as UTF-8 text, or in Excel as 'Unicode Text'")


def _read_rows(sheet_path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    text = _read_text(sheet_path)
    lines: list[list[str]] = []
    # newline="" leaves CRLF and line breaks inside quoted cells to the csv module.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t")
    try:
        lines.extend(reader)
    except csv.Error as error:
        raise PipelineError(
            f"session sheet {sheet_path} line {reader.line_num}: cannot be read as "
            f"tab-separated text ({error}; is a quote mark (\") never closed?)") from None
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
    # Spreadsheets export empty trailing columns as trailing tabs.
    while header and header[-1] == "":
        header.pop()
    return header, numbered[1:]


def _check_header(sheet_path: Path, header: list[str]) -> None:
    problems = []
    seen: set[str] = set()
    for column in header:
        if column in seen and column:
            problems.append(f"row 1: column '{_shown(column)}' appears twice")
        seen.add(column)
    if "" in header:
        problems.append(f"row 1: column {header.index('') + 1} has no name")
    required = load_schema("sessions")["required"]
    missing = [column for column in required if column not in header]
    if missing:
        hint = ""
        if any(column.lower() in missing and column not in missing for column in header):
            hint = "; column names are written in lower case"
        problems.append(f"row 1: the header lacks the column(s) {', '.join(missing)} "
                        f"(required: {', '.join(required)}; the columns are separated by tabs"
                        f"{hint})")
    if problems:
        raise PipelineError(join_problems(f"session sheet {sheet_path}:", problems))


def _shown(text: str, limit: int = 60) -> str:
    """Text for a message: control characters escaped, long text shortened."""
    shown = "".join(char if char.isprintable() else f"\\u{ord(char):04x}" for char in text)
    return shown if len(shown) <= limit else shown[:limit] + "..."


@cache
def _label_rule(column: str) -> tuple[re.Pattern[str], frozenset[str]]:
    """The schema's pattern and forbidden values of a label column, compiled once."""
    spec = load_schema("sessions")["properties"][column]
    return re.compile(spec["pattern"]), frozenset(spec.get("not", {}).get("enum", ()))


def label_is_valid(column: str, value: str) -> bool:
    """Whether ``value`` is a valid ``column`` label (group, project, subject or session), by
    the rule of sessions.schema.yaml (tests check that the two agree)."""
    pattern, forbidden = _label_rule(column)
    return pattern.fullmatch(value) is not None and value not in forbidden


def _label_problem(value: str) -> str:
    """What is wrong with an invalid label, in words, without repeating the label."""
    allowed = f"a label may hold only the {ALLOWED_LABEL_TEXT}"
    if value == "":
        return "is empty"
    if value in (".", ".."):
        return f"may not be '.' or '..' (they name folders); {allowed}"
    for char in value:
        if char in "/\\":
            return f"holds '{char}', which separates folders; {allowed}"
        if char.isspace() and char.isascii():
            return f"holds a space, tab or line break; {allowed} (use '_' or '-' for a space)"
        if not char.isascii():
            name = unicodedata.name(char, "an invisible or unusual character")
            return (f"holds a character that is not plain ASCII (U+{ord(char):04X}, {name}; "
                    f"accented letters, typographic quotes and dashes count); {allowed}")
        if not char.isprintable():
            return f"holds a control character (U+{ord(char):04X}); {allowed}"
        if not (char.isalnum() or char in "._-"):
            return f"holds the character {char!r}; {allowed}"
    return allowed


def _path_problem(value: str) -> str | None:
    """Problems of a dicom_dir cell that no file-system look-up is needed for."""
    if value == "":
        return "is empty"
    if not value.isprintable():  # a space is printable; tabs, line breaks and controls not
        return "holds a line break, tab or control character; write the folder's path only"
    return None


def _check_dicom_dir(dicom_dir: Path, value: str) -> str | None:
    """Cheap checks of one folder (a stat and at most one directory entry); None when fine.

    ``dicom_dir`` is the path as written (links not yet followed), so that a broken link is
    told apart from a missing folder.
    """
    tilde = " (a '~' is not expanded here; write the full path)" if value.startswith("~") else ""
    try:
        status = os.stat(dicom_dir)
    except FileNotFoundError:
        if os.path.islink(dicom_dir):
            return "is a symbolic link to something that does not exist"
        return "does not exist" + tilde
    except PermissionError:
        return "cannot be reached (permission denied on a folder above it)"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "is a loop of symbolic links (a link that leads back to itself)"
        if error.errno == errno.ENOTDIR:
            return "does not exist (a part of its path is a file, not a folder)"
        if error.errno == errno.ENAMETOOLONG:
            return "is too long a path"
        return f"cannot be read ({error.strerror or 'unknown error'})"
    except ValueError:
        return "is not a valid path"
    if not stat.S_ISDIR(status.st_mode):
        return "is not a folder (it is a file); give the folder that holds the DICOM files"
    if not os.access(dicom_dir, os.R_OK | os.X_OK):
        return "cannot be read (permission denied): you need permission to list and open it"
    try:
        with os.scandir(dicom_dir) as entries:
            if next(entries, None) is None:
                return "is an empty folder"
    except PermissionError:
        return "cannot be read (permission denied): you need permission to list and open it"
    except OSError as error:
        return f"cannot be read ({error.strerror or 'unknown error'})"
    return None


def _real_path(path: str | Path) -> str:
    """The absolute path with symbolic links resolved where they can be (never raises on loops)."""
    return os.path.realpath(path)


class _RealPaths:
    """``_real_path`` for many paths that share their folders: each folder above the last part
    is resolved once (10,000 rows usually name folders side by side), the last part with one
    look-up. Same result as os.path.realpath, which resolves the parts one by one."""

    def __init__(self) -> None:
        self._folders: dict[str, str] = {}

    def __call__(self, path: Path) -> str:
        folder, name = os.path.split(path)
        if name in ("", ".", ".."):
            return _real_path(path)
        real_folder = self._folders.get(folder)
        if real_folder is None:
            real_folder = self._folders[folder] = _real_path(folder)
        joined = os.path.join(real_folder, name)
        return _real_path(joined) if os.path.islink(joined) else joined


def _is_inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or below it; both absolute and normalised (realpath).

    Plain string comparison: pathlib's is_relative_to costs ten times as much, 10,000 rows over.
    """
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _overlap_problem(dicom_dir: str, folders: dict[str, str]) -> str | None:
    """A dicom_dir that is, holds or lies inside the staging or results folder."""
    for name, folder in folders.items():
        if dicom_dir == folder:
            return (f"is the {name} folder; the pipeline writes there. Give the folder of the "
                    "original DICOM files")
        if _is_inside(dicom_dir, folder):
            return (f"lies inside the {name} folder ({folder}); the pipeline writes there. Give "
                    "the folder of the original DICOM files")
        if _is_inside(folder, dicom_dir):
            return (f"holds the {name} folder ({folder}); the pipeline's own output would be "
                    f"read as source files. Move {name} elsewhere (setting '{name}')")
    return None


def load_sheet(
    sheet_path: str | Path,
    default_group: str,
    default_project: str,
    check_paths: bool = True,
    *,
    staging: str | Path | None = None,
    results: str | Path | None = None,
) -> list[SessionRow]:
    """Read, validate and return the sheet's sessions; raise PipelineError naming every problem.

    ``check_paths`` looks at each ``dicom_dir`` (one stat and one directory entry per row);
    cluster jobs that re-read the sheet can skip it. ``staging`` and ``results`` (the settings
    of the same name; relative paths start at the working directory) are checked not to lie
    inside a ``dicom_dir`` nor to hold one; None skips that check.
    """
    sheet_path = Path(sheet_path)
    header, rows = _read_rows(sheet_path)
    _check_header(sheet_path, header)
    if not rows:
        raise PipelineError(f"session sheet {sheet_path} has a header but no sessions")
    sheet_dir = Path(_real_path(sheet_path)).parent
    output_folders: dict[str, str] = {}
    for name, folder in (("staging", staging), ("results", results)):
        if folder is not None and str(folder) != "":
            try:
                output_folders[name] = _real_path(folder)
            except ValueError:
                raise PipelineError(f"setting '{name}' is not a valid path") from None
    real_path = _RealPaths()
    problems: list[str] = []
    sessions: list[SessionRow] = []
    first_row_of: dict[tuple[str, str, str, str], int] = {}
    for number, cells in rows:
        if len(cells) > len(header) and any(cells[len(header):]):
            problems.append(f"row {number}: has {len(cells)} cells but the header has "
                            f"{len(header)} columns (a stray tab?)")
            continue
        values = dict(zip(header, cells + [""] * (len(header) - len(cells)), strict=False))
        swallowed = [column for column, value in values.items() if "\t" in value]
        if swallowed:
            problems.append(
                f"row {number}, column '{_shown(swallowed[0])}': a quote mark (\") at the start "
                "of the cell is never closed, so the rows after it were read into this cell; "
                "remove that quote mark")
            continue
        for column in ("group", "project"):
            if column in values and values[column] == "":
                del values[column]  # empty override: use the config's value
        row_problems = _row_problems(values)
        problems.extend(f"row {number}, column '{column}': {problem}"
                        for column, problem in row_problems)
        bad_columns = {column for column, _ in row_problems}
        key = (values.get("group", default_group), values.get("project", default_project),
               values.get("subject", ""), values.get("session", ""))
        labels_fine = not bad_columns & set(LABEL_COLUMNS)
        if labels_fine and key in first_row_of:
            problems.append(f"row {number}: the same group, project, subject and session as "
                            f"row {first_row_of[key]}; each session may be listed once")
            continue
        if labels_fine:
            first_row_of[key] = number
        if "dicom_dir" in bad_columns:
            continue
        value = values["dicom_dir"]
        written = sheet_dir / value
        dicom_dir = real_path(written)
        dir_problem = _check_dicom_dir(written, value) if check_paths else None
        if dir_problem is None:
            dir_problem = _overlap_problem(dicom_dir, output_folders)
        if dir_problem:
            problems.append(f"row {number}, column 'dicom_dir': {value} {dir_problem}")
        if row_problems or dir_problem:
            continue
        sessions.append(SessionRow(row=number, group=key[0], project=key[1], subject=key[2],
                                   session=key[3], dicom_dir=dicom_dir))
    if problems:
        raise PipelineError(join_problems(
            f"session sheet {sheet_path} has {len(problems)} problem(s); nothing was run:",
            problems))
    return sessions


def _row_problems(values: dict[str, str]) -> list[tuple[str, str]]:
    """(column, problem) pairs of one row's cells, before any file-system look-up.

    These checks are the whole of sessions.schema.yaml for a row (every cell is text, the
    header check has seen the required columns; tests check that they agree with the schema),
    without calling jsonschema for each of 10,000 rows.
    """
    problems: list[tuple[str, str]] = []
    for column in LABEL_COLUMNS:
        if column in values and not label_is_valid(column, values[column]):
            problems.append((column, GROUP_ID_RULE if column == "group" and values[column]
                             else _label_problem(values[column])))
    if "dicom_dir" in values:
        path_problem = _path_problem(values["dicom_dir"])
        if path_problem:
            problems.append(("dicom_dir", path_problem))
    return sorted(problems)
