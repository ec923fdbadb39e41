"""Property tests: any sheet gives sessions or a PipelineError, never another exception."""

import os
import re
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deidpipe.errors import PipelineError
from deidpipe.schema import load_schema
from deidpipe.sheet import LABEL_COLUMNS, SessionRow, label_is_valid, load_sheet

LABEL = re.compile(r"[A-Za-z0-9._-]+")
GROUP = re.compile(r"[0-9a-z][0-9a-z.@_-]{0,30}[0-9a-z]")  # Flywheel's rule for a group id
SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
# The sheet's rows are checked by hand (fast); the schema stays their written definition.
ROW_SCHEMA = jsonschema.Draft202012Validator(load_schema("sessions"))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with DICOM folders, a file, an empty folder and links, as sheet cells name."""
    base = tmp_path_factory.mktemp("sheet_properties")
    for name in ("a", "b", "staging/inside"):
        (base / name).mkdir(parents=True)
        (base / name / "IM1.dcm").write_bytes(b"x")
    (base / "empty").mkdir()
    (base / "afile").write_text("x")
    os.symlink("loop", base / "loop")
    os.symlink("nowhere", base / "dangling")
    return base


def check(base: Path, data: bytes, **folders: str | None) -> None:
    """Load ``data`` as a sheet: sessions that are valid, or a PipelineError."""
    sheet = base / "sessions.tsv"
    sheet.write_bytes(data)
    try:
        sessions = load_sheet(sheet, "grp", "proj", **folders)
    except PipelineError as error:
        assert str(error).strip(), "an error without a message"
        return
    assert sessions, "a valid sheet has at least one session"
    assert len({session.key for session in sessions}) == len(sessions)
    for session in sessions:
        assert isinstance(session, SessionRow)
        assert GROUP.fullmatch(session.group)
        assert all(LABEL.fullmatch(label) and label not in (".", "..")
                   for label in session.key[1:])
        assert Path(session.dicom_dir).is_dir()
        assert ROW_SCHEMA.is_valid({column: getattr(session, column)
                                    for column in (*LABEL_COLUMNS, "dicom_dir")})
        if folders.get("staging"):
            assert not Path(session.dicom_dir).is_relative_to(base / "staging")


@SETTINGS
@given(data=st.binary(max_size=400))
def test_any_bytes(workspace: Path, data: bytes) -> None:
    check(workspace, data)


@SETTINGS
@given(text=st.text(max_size=300))
def test_any_text(workspace: Path, text: str) -> None:
    check(workspace, text.encode("utf-8"))


COLUMN = st.sampled_from(["subject", "session", "dicom_dir", "group", "project", "notes",
                          "Subject", "", " subject "])
CELL = st.one_of(
    st.sampled_from(["s1", "s2", "t1", "a", "b", "afile", "empty", "loop", "dangling",
                     "staging", "staging/inside", ".", "..", "../a", "/", "~", "missing",
                     "sub 1", "a/b", "s\u00fcb", "", " ", '"', '"s1"', '"open', "s1\"x",
                     "\x00", "\ufeff", "\u00a0s1"]),
    st.text(max_size=8),
)
LABEL_CELL = st.one_of(st.sampled_from(["s1", "s2", "t1", "sub-01"]),
                       st.from_regex(LABEL, fullmatch=True))
PATH_CELL = st.one_of(CELL, st.sampled_from(["a/IM1.dcm", "loop", "loop/x", "./a", "b/../a"]))
# Rows whose labels are valid, so that the dicom_dir checks are reached.
GOOD_ROW = st.tuples(LABEL_CELL, LABEL_CELL, PATH_CELL, st.sampled_from(["", "note"])).map(list)
LINE_END = st.sampled_from(["\n", "\r\n", "\r", "\n\n"])


@st.composite
def tsv_sheets(draw: st.DrawFn) -> bytes:
    header = draw(st.one_of(st.just(["subject", "session", "dicom_dir", "notes"]),
                            st.lists(COLUMN, min_size=0, max_size=6)))
    rows = [header, *draw(st.lists(st.one_of(GOOD_ROW, st.lists(CELL, max_size=7)),
                                   max_size=6))]
    end = draw(LINE_END)
    text = end.join("\t".join(cells) for cells in rows) + draw(st.sampled_from(["", end]))
    if draw(st.booleans()):
        text = "\ufeff" + text
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-16", "latin-1"]))
    return text.encode(encoding, errors="replace")


@SETTINGS
@given(data=tsv_sheets(), with_folders=st.booleans())
def test_tsv_shaped_sheets(workspace: Path, data: bytes, with_folders: bool) -> None:
    folders = ({"staging": str(workspace / "staging"), "results": str(workspace / "results")}
               if with_folders else {})
    check(workspace, data, **folders)


# ---- valid sheets, written in every way a spreadsheet or a person writes them ----------------

VALID_LABEL = st.from_regex(r"[A-Za-z0-9._][A-Za-z0-9._-]{0,15}", fullmatch=True).filter(
    lambda label: label not in (".", ".."))
VALID_GROUP = st.from_regex(r"[0-9a-z][0-9a-z.@_-]{0,30}[0-9a-z]", fullmatch=True)
# The workspace's DICOM folders, written as a person may write them (relative to the sheet's
# folder, or absolute: filled in by the test).
VALID_FOLDER = st.sampled_from(["a", "b", "./a", "b/../a", "a/", "{base}/b", "staging/inside"])
NOTE = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"),
                                      blacklist_characters='"'), max_size=12)


@st.composite
def valid_sheets(draw: st.DrawFn) -> tuple[str, list[tuple[str, str, str, str, str]]]:
    """A sheet that must load (text, before the base folder is filled in), and the sessions it
    lists: (group, project, subject, session, folder as written)."""
    optional = draw(st.lists(st.sampled_from(["group", "project", "notes"]), unique=True))
    header = draw(st.permutations(["subject", "session", "dicom_dir", *optional]))
    keys = draw(st.lists(st.tuples(VALID_LABEL, VALID_LABEL), min_size=1, max_size=6,
                         unique=True))
    lines = ["\t".join(header) + draw(st.sampled_from(["", "\t", "\t\t"]))]
    expected = []
    for subject, session in keys:
        values = {"subject": subject, "session": session, "dicom_dir": draw(VALID_FOLDER),
                  "notes": draw(NOTE)}
        # An empty override cell means the config's group or project.
        values["group"] = draw(st.sampled_from(["", draw(VALID_GROUP)]))
        values["project"] = draw(st.sampled_from(["", draw(VALID_LABEL)]))
        cells = [draw(st.sampled_from(["", " "])) + values[column]
                 + draw(st.sampled_from(["", " "])) for column in header]
        if draw(st.integers(0, 5)) == 0:
            lines.append(draw(st.sampled_from(["", "\t", " "])))  # a blank line between rows
        lines.append("\t".join(cells))
        in_sheet = set(header)
        expected.append((values["group"] if "group" in in_sheet and values["group"] else "grp",
                         values["project"] if "project" in in_sheet and values["project"]
                         else "proj", subject, session, values["dicom_dir"]))
    end = draw(st.sampled_from(["\n", "\r\n"]))
    text = end.join(lines) + draw(st.sampled_from(["", end]))
    return draw(st.sampled_from(["", "\ufeff"])) + text, expected


def test_valid_sheets_load_as_written(workspace: Path) -> None:
    """Every generated valid sheet loads, to exactly its rows: labels, defaults for empty group
    and project cells, and each folder found where it was written."""
    loaded = []

    @SETTINGS
    @given(sheet=valid_sheets(), encoding=st.sampled_from(["utf-8", "utf-16"]))
    def load(sheet: tuple[str, list[tuple[str, str, str, str, str]]], encoding: str) -> None:
        text, expected = sheet
        path = workspace / "sessions.tsv"
        path.write_bytes(text.replace("{base}", str(workspace)).encode(encoding))
        sessions = load_sheet(path, "grp", "proj")
        assert [(row.group, row.project, row.subject, row.session) for row in sessions] == [
            key[:4] for key in expected]
        for row, key in zip(sessions, expected, strict=True):
            written = key[4].replace("{base}", str(workspace))
            assert row.dicom_dir == os.path.realpath(workspace / written)
        check(workspace, path.read_bytes())  # and what every loaded sheet must satisfy
        loaded.append(len(sessions))

    load()
    assert len(loaded) >= 200  # examples checked, of SETTINGS' 300
    assert max(loaded) > 1


@SETTINGS
@given(column=st.sampled_from(LABEL_COLUMNS),
       value=st.one_of(st.text(max_size=10), st.from_regex(LABEL, fullmatch=True),
                       st.sampled_from([".", "..", "-a", "a-", "._", "a\n", "\n", "a b"])))
def test_label_check_is_the_schema(column: str, value: str) -> None:
    """The hand-written label check accepts exactly what sessions.schema.yaml accepts."""
    schema = jsonschema.Draft202012Validator(load_schema("sessions")["properties"][column])
    # jsonschema runs the pattern with Python's re.search, whose '$' also matches before a final
    # line break; in JSON Schema's own regex dialect (ECMA-262) it does not, nor in the check.
    expected = schema.is_valid(value) and not value.endswith("\n")
    assert label_is_valid(column, value) == expected
