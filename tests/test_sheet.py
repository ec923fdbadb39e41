import os
from pathlib import Path

import pytest

from conftest import run_unprivileged
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


@pytest.mark.parametrize("label", [".", "..", "a/b", "sub 1", "sübject", "x;rm", "", "-rf"])
def test_bad_labels_are_rejected_with_row_and_column(dicom_dirs, label):
    sheet = write_sheet(dicom_dirs, f"subject\tsession\tdicom_dir\ns1\tt1\ta\n{label}\tt1\tb\n")
    with pytest.raises(PipelineError) as error:
        load_sheet(sheet, "grp", "proj")
    assert "row 3, column 'subject'" in str(error.value)
    assert "row 2" not in str(error.value)


@pytest.mark.parametrize("group", ["Neuro", "g", "-lab", "lab-", "neuro lab", "lab/2",
                                   "a" * 33, "läb", "lab!"])
def test_a_group_id_flywheel_refuses_is_an_error_before_anything_runs(dicom_dirs, group):
    """Flywheel's rule, as its CLI checks it: caught in the sheet, not at the upload after
    staging and verification."""
    sheet = write_sheet(dicom_dirs, f"subject\tsession\tdicom_dir\tgroup\ns1\tt1\ta\tlab\n"
                                    f"s2\tt1\tb\t{group}\n")
    with pytest.raises(PipelineError) as error:
        load_sheet(sheet, "grp", "proj")
    assert "row 3, column 'group': is not a Flywheel group id" in str(error.value)
    assert "row 2" not in str(error.value)


@pytest.mark.parametrize("group", ["lab", "neuro-lab", "a1", "my.lab@penn", "lab_2", "00",
                                   "a" * 32])
def test_group_ids_flywheel_takes_are_accepted(dicom_dirs, group):
    sheet = write_sheet(dicom_dirs, f"subject\tsession\tdicom_dir\tgroup\ns1\tt1\ta\t{group}\n")
    assert load_sheet(sheet, "grp", "proj")[0].group == group


def test_duplicate_session_names_both_rows(dicom_dirs):
    sheet = write_sheet(dicom_dirs, "subject\tsession\tdicom_dir\tgroup\n"
                                    "MRN4041\tt1\ta\t\nMRN4041\tt1\tb\tgrp\n")
    with pytest.raises(PipelineError, match=r"row 3: the same group, project, subject and "
                                            r"session as row 2") as error:
        load_sheet(sheet, "grp", "proj")
    assert "MRN4041" not in str(error.value)


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


ACCEPTED = {
    "byte-order mark": "\ufeffsubject\tsession\tdicom_dir\ns1\tt1\ta\ns2\tt1\tb\n",
    "CRLF": "subject\tsession\tdicom_dir\r\ns1\tt1\ta\r\ns2\tt1\tb\r\n",
    "old Mac CR": "subject\tsession\tdicom_dir\rs1\tt1\ta\rs2\tt1\tb\r",
    "trailing spaces": "subject \tsession\tdicom_dir  \ns1  \tt1 \ta \ns2\t t1\tb\t\n",
    "notes column": "subject\tnotes\tsession\tdicom_dir\ns1\tfirst\tt1\ta\ns2\t\tt1\tb\n",
    "empty trailing columns": "subject\tsession\tdicom_dir\t\t\ns1\tt1\ta\t\t\ns2\tt1\tb\n",
    "blank lines": "subject\tsession\tdicom_dir\n\ns1\tt1\ta\n\t\t\ns2\tt1\tb\n\n",
    "quoted cells": 'subject\tsession\tdicom_dir\tnotes\n"s1"\tt1\ta\t"said ""hi"""\n'
                    's2\tt1\t"b"\t\n',
    "multi-line note": 'subject\tsession\tdicom_dir\tnotes\ns1\tt1\ta\t"line 1\nline 2"\n'
                       "s2\tt1\tb\t\n",
    "missing trailing cells": "subject\tsession\tdicom_dir\tnotes\ns1\tt1\ta\ns2\tt1\tb\n",
}


@pytest.mark.parametrize("text", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_what_spreadsheets_and_people_write_is_accepted(dicom_dirs, text):
    sessions = load_sheet(write_sheet(dicom_dirs, text), "grp", "proj")
    assert [(s.subject, s.session, Path(s.dicom_dir).name) for s in sessions] == [
        ("s1", "t1", "a"), ("s2", "t1", "b")]


def test_excel_unicode_text_utf16_is_accepted(dicom_dirs):
    text = "subject\tsession\tdicom_dir\tnotes\r\ns1\tt1\ta\tJosé's scan\r\n"
    sessions = load_sheet(write_sheet(dicom_dirs, text, "utf-16"), "grp", "proj")
    assert [(s.subject, s.row) for s in sessions] == [("s1", 2)]


HEADER = "subject\tsession\tdicom_dir\n"
# Each bad sheet, and what its one error says (row, column and the problem, in words).
BAD_SHEETS = {
    "duplicate column": ("subject\tsession\tdicom_dir\tnotes\tnotes\ns1\tt1\ta\t\t\n",
                         "row 1: column 'notes' appears twice"),
    "unnamed column": ("subject\t\tsession\tdicom_dir\ns1\tx\tt1\ta\n",
                       "row 1: column 2 has no name"),
    "capitalised header": ("Subject\tSession\tdicom_dir\nS1\tt1\ta\n",
                           "lacks the column.*subject, session.*lower case"),
    "comma-separated": ("subject,session,dicom_dir\ns1,t1,a\n",
                        "lacks the column.*separated by tabs"),
    "empty file": ("", "is empty: it needs a header row"),
    "only blank lines": ("\r\n \t \r\n", "is empty"),
    "header only": (HEADER, "has a header but no sessions"),
    "header not first": ("\n" + HEADER + "s1\tt1\ta\n", "row 1: the first row must be the header"),
    "label with /": (HEADER + "a/b\tt1\ta\n", "row 2, column 'subject': holds '/'"),
    "label with \\": (HEADER + "s1\ta\\b\ta\n", "row 2, column 'session': holds '\\\\'"),
    "label ..": (HEADER + "..\tt1\ta\n", "row 2, column 'subject': may not be '.' or '..'"),
    "label with a space": (HEADER + "sub 1\tt1\ta\n", "row 2, column 'subject': holds a space"),
    "label with an accent": (HEADER + "s\u00fcb\tt1\ta\n",
                             "row 2, column 'subject': holds a character that is not plain ASCII"),
    "label with a non-breaking space": (HEADER + "s\u00a01\tt1\ta\n",
                                        "row 2, column 'subject': .*NO-BREAK SPACE"),
    "label with punctuation": ("subject\tsession\tdicom_dir\tproject\ns1\tt1\ta\tp;q\n",
                               "row 2, column 'project': holds the character ';'"),
    "empty label": (HEADER + "s1\t\ta\n", "row 2, column 'session': is empty"),
    "empty dicom_dir": (HEADER + "s1\tt1\t\n", "row 2, column 'dicom_dir': is empty"),
    "dicom_dir with a control character": (HEADER + "s1\tt1\ta\x00b\n",
                                           "row 2, column 'dicom_dir': holds a line break"),
    "dicom_dir with ~": (HEADER + "s1\tt1\t~/scans\n",
                         "~/scans does not exist \\(a '~' is not expanded"),
    "stray cell": (HEADER + "s1\tt1\ta\tnote\n", "row 2: has 4 cells but the header has 3"),
    "unclosed quote swallows rows": (
        "subject\tsession\tdicom_dir\tnotes\ns1\tt1\ta\t\"oops\ns2\tt1\tb\t\n",
        "row 2, column 'notes': a quote mark .* never closed, so the rows after it"),
    "duplicate session": (HEADER + "s1\tt1\ta\ns2\tt1\ta\ns1\tt1\tb\n",
                          "row 4: the same group, project, subject and session as row 2"),
    "duplicate session via override": ("subject\tsession\tdicom_dir\tgroup\n"
                                       "s1\tt1\ta\tgrp\ns1\tt1\tb\t\n",
                                       "row 3: the same .* as row 2"),
}


@pytest.mark.parametrize("text, message", BAD_SHEETS.values(), ids=BAD_SHEETS.keys())
def test_bad_sheets_give_one_clear_error(dicom_dirs, text, message):
    sheet = write_sheet(dicom_dirs, text)
    with pytest.raises(PipelineError, match=message) as error:
        load_sheet(sheet, "grp", "proj")
    assert str(sheet) in str(error.value)
    assert "Traceback" not in str(error.value)


@pytest.mark.parametrize("label", ["MRN 40412345", "40412345/1", "Doe^Jane", "Jöhn"])
def test_label_errors_never_repeat_the_label(dicom_dirs, label):
    sheet = write_sheet(dicom_dirs, HEADER + f"s1\t{label}\ta\n")
    with pytest.raises(PipelineError, match="row 2, column 'session': ") as error:
        load_sheet(sheet, "grp", "proj")
    for part in label.replace("/", " ").replace("^", " ").split():
        assert len(part) < 3 or part not in str(error.value)


def test_latin1_sheet_names_line_and_column(dicom_dirs):
    text = HEADER + "s1\tt1\ta\nJos\u00e9\tt1\tb\n"
    with pytest.raises(PipelineError, match=r"not UTF-8 text: line 3, column 'subject' holds a "
                                            r"character saved in another encoding") as error:
        load_sheet(write_sheet(dicom_dirs, text, "latin-1"), "grp", "proj")
    assert "Jos" not in str(error.value)


@pytest.mark.parametrize("target, message", [
    ("afile", "afile is not a folder"),
    ("missing", "missing does not exist"),
    ("missing/deeper", "missing/deeper does not exist"),
    ("afile/deeper", "afile/deeper does not exist \\(a part of its path is a file"),
    ("loop", "loop is a loop of symbolic links"),
    ("dangling", "dangling is a symbolic link to something that does not exist"),
    ("empty", "empty is an empty folder"),
])
def test_dicom_dir_must_be_a_folder_with_files(dicom_dirs, target, message):
    (dicom_dirs / "afile").write_text("x")
    (dicom_dirs / "empty").mkdir()
    os.symlink("loop", dicom_dirs / "loop")
    os.symlink("nowhere", dicom_dirs / "dangling")
    sheet = write_sheet(dicom_dirs, HEADER + f"s1\tt1\ta\ns2\tt1\t{target}\n")
    with pytest.raises(PipelineError, match=f"has 1 problem.*\n.*row 3, column 'dicom_dir': "
                                            f"{message}"):
        load_sheet(sheet, "grp", "proj")


def test_a_link_to_a_folder_is_fine(dicom_dirs):
    os.symlink(dicom_dirs / "a", dicom_dirs / "link")
    sheet = write_sheet(dicom_dirs, HEADER + "s1\tt1\tlink\n")
    assert load_sheet(sheet, "grp", "proj")[0].dicom_dir == str(dicom_dirs / "a")


LOAD_SHEET = """
import sys
from deidpipe.errors import PipelineError
from deidpipe.sheet import load_sheet
try:
    load_sheet(sys.argv[1], "grp", "proj")
except PipelineError as error:
    print(error)
"""


@pytest.mark.parametrize("mode", [0o000, 0o300, 0o600])
def test_unreadable_dicom_dir(open_folder, mode):
    # As an unprivileged user (as 'nobody' when the tests run as root): root reads anything.
    for name in ("a", "b"):  # modes set: the tests' umask may be owner-only
        (open_folder / name).mkdir(mode=0o755)
        (open_folder / name).chmod(0o755)
        (open_folder / name / "IM1.dcm").write_bytes(b"x")
        (open_folder / name / "IM1.dcm").chmod(0o644)
    sheet = write_sheet(open_folder, HEADER + "s1\tt1\ta\ns2\tt1\tb\n")
    sheet.chmod(0o644)
    (open_folder / "a").chmod(mode)
    result = run_unprivileged(LOAD_SHEET, str(sheet))
    assert result.returncode == 0, result.stderr
    assert "has 1 problem" in result.stdout
    assert "row 2, column 'dicom_dir': a cannot be read (permission denied)" in result.stdout


def test_unreadable_dicom_dir_as_the_permission_check_sees_it(dicom_dirs, monkeypatch):
    # Runs as root too: the operating system's answer (os.access) says "no" for one folder.
    refused = str(dicom_dirs / "b")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, *args, **kwargs: (
        False if str(path) == refused else real_access(path, mode, *args, **kwargs)))
    sheet = write_sheet(dicom_dirs, HEADER + "s1\tt1\ta\ns2\tt1\tb\n")
    with pytest.raises(PipelineError, match="has 1 problem.*\n.*row 3, column 'dicom_dir': b "
                                            "cannot be read \\(permission denied\\)"):
        load_sheet(sheet, "grp", "proj")


def test_unreadable_sheet(open_folder):
    (open_folder / "a").mkdir()
    (open_folder / "a").chmod(0o755)  # the tests' umask may be owner-only
    (open_folder / "a" / "IM1.dcm").write_bytes(b"x")
    sheet = write_sheet(open_folder, HEADER + "s1\tt1\ta\n")
    sheet.chmod(0o000)
    result = run_unprivileged(LOAD_SHEET, str(sheet))
    assert result.returncode == 0, result.stderr
    assert "cannot be read (permission denied)" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_sheet_that_is_a_folder(dicom_dirs):
    with pytest.raises(PipelineError, match="is a folder, not a file"):
        load_sheet(dicom_dirs / "a", "grp", "proj")


@pytest.mark.parametrize("dicom_dir, message", [
    ("staging/old", "staging/old lies inside the staging folder"),
    ("work/results/x", "work/results/x lies inside the results folder"),
    ("staging", "staging is the staging folder"),
    ("work", "work holds the results folder"),
    (".", ". holds the staging folder"),
])
def test_dicom_dir_and_output_folders_must_not_overlap(dicom_dirs, monkeypatch, dicom_dir,
                                                       message):
    for folder in ("staging/old", "work/results/x"):
        (dicom_dirs / folder).mkdir(parents=True)
        (dicom_dirs / folder / "IM1.dcm").write_bytes(b"x")
    monkeypatch.chdir(dicom_dirs)  # staging and results are relative to the working folder
    sheet = write_sheet(dicom_dirs, HEADER + f"s1\tt1\ta\ns2\tt1\t{dicom_dir}\n")
    with pytest.raises(PipelineError, match=f"has 1 problem.*\n.*row 3, column 'dicom_dir': "
                                            f"{message}"):
        load_sheet(sheet, "grp", "proj", staging="staging", results="work/results")
    # Without the folders (the default), the same sheet is not checked for overlap.
    assert len(load_sheet(sheet, "grp", "proj")) == 2


def test_output_folders_reached_through_a_link_are_found(dicom_dirs):
    os.symlink(dicom_dirs / "a", dicom_dirs / "staging-link")
    sheet = write_sheet(dicom_dirs, HEADER + "s1\tt1\ta\n")
    with pytest.raises(PipelineError, match="a is the staging folder"):
        load_sheet(sheet, "grp", "proj", staging=dicom_dirs / "staging-link",
                   results=dicom_dirs / "results")
    assert load_sheet(sheet, "grp", "proj", staging=dicom_dirs / "staging",
                      results=dicom_dirs / "results")[0].subject == "s1"


def test_links_anywhere_in_a_path_are_resolved(dicom_dirs):
    os.symlink(dicom_dirs, dicom_dirs / "here")  # a folder part that is a link
    os.symlink("a", dicom_dirs / "to-a")  # a last part that is a link
    sheet = write_sheet(dicom_dirs, HEADER + "s1\tt1\there/to-a\ns2\tt1\there/b\n"
                                             "s3\tt1\tto-a/../b\ns4\tt1\there/a/../b\n")
    real = os.path.realpath(dicom_dirs)
    assert [s.dicom_dir for s in load_sheet(sheet, "grp", "proj")] == [
        f"{real}/a", f"{real}/b", f"{real}/b", f"{real}/b"]


def test_rows_are_checked_without_jsonschema(dicom_dirs, monkeypatch):
    # 10,000 rows through jsonschema took two seconds of planning: the rows are checked by hand
    # (test_sheet_properties checks that the hand-written rules are the schema's).
    import jsonschema

    def refuse(*args, **kwargs):
        raise AssertionError("jsonschema was called for a row")

    monkeypatch.setattr(jsonschema.Draft202012Validator, "iter_errors", refuse)
    monkeypatch.setattr(jsonschema.Draft202012Validator, "is_valid", refuse)
    monkeypatch.setattr(jsonschema, "validate", refuse)
    sheet = write_sheet(dicom_dirs, HEADER + "s1\tt1\ta\ns2\tt1\tb\n")
    assert len(load_sheet(sheet, "grp", "proj")) == 2
    with pytest.raises(PipelineError, match="row 2, column 'subject'"):
        load_sheet(write_sheet(dicom_dirs, HEADER + "..\tt1\ta\n"), "grp", "proj")
