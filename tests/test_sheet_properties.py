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
        assert all(LABEL.fullmatch(label) and label not in (".", "..")
                   for label in session.key)
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


def test_the_generator_reaches_valid_sheets(workspace: Path) -> None:
    # The TSV strategy above is only worth something if valid sheets are among its shapes.
    check(workspace, b"subject\tsession\tdicom_dir\ns1\tt1\ta\n")
    assert load_sheet(workspace / "sessions.tsv", "grp", "proj")[0].subject == "s1"


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
