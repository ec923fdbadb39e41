from pathlib import Path

import pytest

from deidpipe.errors import PipelineError
from deidpipe.sheet import load_sheet


def write_sheet(folder: Path, text: str, encoding: str = "utf-8") -> Path:
    path = folder / "sessions.tsv"
    path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture
def dicom_dirs(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "IM1.dcm").write_bytes(b"x")
    return tmp_path


def test_valid_sheet_with_overrides_and_relative_dirs(dicom_dirs):
    sheet = write_sheet(dicom_dirs, "subject\tsession\tdicom_dir\tproject\n"
                                    "s1\tt1\ta\t\n"
                                    "s2\tt1\tb\tother\n")
    sessions = load_sheet(sheet, "grp", "proj")
    assert [s.key for s in sessions] == [("grp", "proj", "s1", "t1"),
                                         ("grp", "other", "s2", "t1")]
    assert sessions[0].dicom_dir == str(dicom_dirs / "a")
    assert sessions[1].row == 3
    assert sessions[1].path == "grp/other/s2/t1"


def test_spreadsheet_habits_are_accepted(dicom_dirs):
    # BOM, CRLF, trailing spaces, a notes column and a blank line, as spreadsheets write them.
    text = ("\ufeffsubject\tsession\tdicom_dir\tnotes\r\n"
            "s1 \tt1\ta \tfirst scan\r\n\r\ns2\tt1\tb\t\r\n")
    sessions = load_sheet(write_sheet(dicom_dirs, text), "grp", "proj")
    assert [(s.subject, s.row) for s in sessions] == [("s1", 2), ("s2", 4)]


@pytest.mark.parametrize("label", [".", "..", "a/b", "sub 1", "sübject", "x;rm", ""])
def test_bad_labels_are_rejected_with_row_and_column(dicom_dirs, label):
    sheet = write_sheet(dicom_dirs, f"subject\tsession\tdicom_dir\ns1\tt1\ta\n{label}\tt1\tb\n")
    with pytest.raises(PipelineError) as error:
        load_sheet(sheet, "grp", "proj")
    assert "row 3, column 'subject'" in str(error.value)
    assert "row 2" not in str(error.value)


def test_duplicate_session_names_both_rows(dicom_dirs):
    sheet = write_sheet(dicom_dirs, "subject\tsession\tdicom_dir\ns1\tt1\ta\ns1\tt1\tb\n")
    with pytest.raises(PipelineError, match=r"row 3: the same group, project, subject and "
                                            r"session as row 2"):
        load_sheet(sheet, "grp", "proj")


def test_same_labels_in_another_project_are_fine(dicom_dirs):
    sheet = write_sheet(dicom_dirs,
                        "subject\tsession\tdicom_dir\tproject\ns1\tt1\ta\tp1\ns1\tt1\tb\tp2\n")
    assert len(load_sheet(sheet, "grp", "proj")) == 2


def test_missing_required_column(dicom_dirs):
    sheet = write_sheet(dicom_dirs, "subject\tdicom_dir\ns1\ta\n")
    with pytest.raises(PipelineError, match="row 1: the header lacks the column.*session"):
        load_sheet(sheet, "grp", "proj")


def test_duplicate_column(dicom_dirs):
    sheet = write_sheet(dicom_dirs, "subject\tsession\tdicom_dir\tsubject\ns1\tt1\ta\ns2\n")
    with pytest.raises(PipelineError, match="column 'subject' appears twice"):
        load_sheet(sheet, "grp", "proj")


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("\n\n", "is empty"),
    ("subject\tsession\tdicom_dir\n", "has a header but no sessions"),
])
def test_empty_sheets(dicom_dirs, text, message):
    with pytest.raises(PipelineError, match=message):
        load_sheet(write_sheet(dicom_dirs, text), "grp", "proj")


def test_empty_cells_and_every_problem_reported_at_once(dicom_dirs):
    (dicom_dirs / "empty").mkdir()
    (dicom_dirs / "afile").write_text("x")
    sheet = write_sheet(dicom_dirs, "subject\tsession\tdicom_dir\n"
                                    "s1\t\ta\n"          # row 2: empty session
                                    "s2\tt1\t\n"         # row 3: empty dicom_dir
                                    "s3\tt1\tmissing\n"  # row 4: does not exist
                                    "s4\tt1\tempty\n"    # row 5: empty folder
                                    "s5\tt1\tafile\n")   # row 6: a file
    with pytest.raises(PipelineError) as error:
        load_sheet(sheet, "grp", "proj")
    message = str(error.value)
    assert "has 5 problem(s)" in message
    assert "row 2, column 'session'" in message
    assert "row 3, column 'dicom_dir': is empty" in message
    assert "row 4, column 'dicom_dir': missing does not exist" in message
    assert "row 5, column 'dicom_dir': empty is an empty folder" in message
    assert "row 6, column 'dicom_dir': afile is not a folder" in message


def test_path_checks_can_be_skipped(dicom_dirs):
    sheet = write_sheet(dicom_dirs, "subject\tsession\tdicom_dir\ns1\tt1\tnowhere\n")
    assert load_sheet(sheet, "grp", "proj", check_paths=False)[0].subject == "s1"


def test_stray_cells(dicom_dirs):
    sheet = write_sheet(dicom_dirs, "subject\tsession\tdicom_dir\ns1\tt1\ta\tstray\n")
    with pytest.raises(PipelineError, match="row 2: has 4 cells but the header has 3"):
        load_sheet(sheet, "grp", "proj")


def test_not_utf8(dicom_dirs):
    sheet = write_sheet(dicom_dirs, "subject\tsession\tdicom_dir\nJosé\tt1\ta\n", "latin-1")
    with pytest.raises(PipelineError, match="not UTF-8"):
        load_sheet(sheet, "grp", "proj")


def test_missing_sheet(tmp_path):
    with pytest.raises(PipelineError, match="does not exist"):
        load_sheet(tmp_path / "nope.tsv", "grp", "proj")
