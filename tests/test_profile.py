import io
import os
from pathlib import Path

import pydicom
import pytest
import yaml
from fw_file_rs.dcm import Context
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from deidpipe.errors import PipelineError
from deidpipe.profile import generate_profile, load_profile, lookup_keywords

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "tests" / "data" / "reference_profiles"


def without_comments(text: str) -> str:
    return "".join(line for line in text.splitlines(True) if not line.startswith("#"))


@pytest.mark.parametrize("folder, reference", [
    ("PennBrainScienceCenter", "penn_bsc_profile_v1.0.yaml"),
    ("PennBrainScienceCenter_v3.0", "penn_bsc_profile_v3.0.yaml"),
])
def test_shipped_profiles_match_the_official_reference(folder, reference):
    generated = generate_profile(REPO / "profiles" / folder)
    expected = (REFERENCE / reference).read_text()
    # Same fields, actions and settings...
    assert yaml.safe_load(generated) == yaml.safe_load(expected)
    # ...and, apart from the generated-file comment, the same bytes.
    assert without_comments(generated) == expected


def test_generation_is_deterministic():
    folder = REPO / "profiles" / "PennBrainScienceCenter_v3.0"
    assert generate_profile(folder) == generate_profile(folder)


def make_profile(folder: Path, version: str = "Site_v1", **files: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "settings.yaml").write_text(f"version: {version}\n")
    for name, text in files.items():
        (folder / f"{name}.csv").write_text(text)
    return folder


def test_all_three_actions_and_awkward_replacements_round_trip(tmp_path):
    awkward = {"InstitutionName": "Site: A # B", "StationName": " leading space",
               "StudyDescription": "it's \"quoted\"", "OperatorsName": "- dash: first"}
    replace = "Tag,Keyword,Replacement\n" + "".join(
        f'"{tag}",{keyword},"{value.replace(chr(34), chr(34) * 2)}"\n'
        for keyword, value, tag in [
            ("InstitutionName", awkward["InstitutionName"], "(0008,0080)"),
            ("StationName", awkward["StationName"], "(0008,1010)"),
            ("StudyDescription", awkward["StudyDescription"], "(0008,1030)"),
            ("OperatorsName", awkward["OperatorsName"], "(0008,1070)")])
    folder = make_profile(tmp_path / "site", empty='Tag,Keyword\n"(0010,0010)",PatientName\n',
                          remove='Tag,Keyword\n"(0010,0020)",patientid_wrong\n'.replace(
                              "patientid_wrong", "PatientID"),
                          replace=replace)
    text = generate_profile(folder)
    fields = {f["name"]: f for f in yaml.safe_load(text)["dicom"]["fields"]}
    assert fields["PatientName"] == {"name": "PatientName", "replace-with": ""}
    assert fields["PatientID"] == {"name": "PatientID", "remove": True}
    for keyword, value in awkward.items():
        assert fields[keyword]["replace-with"] == value
    assert fields["DeidentificationMethod"]["replace-with"] == "Site_v1"
    assert list(fields)[-1] == "DeidentificationMethod"
    # Flywheel's engine accepts it.
    Context().deid_profile(text)
    out = tmp_path / "site.yaml"
    out.write_text(text)
    assert load_profile(out).version == "Site_v1"


def test_lowercase_hex_and_spaces_in_tags_are_accepted(tmp_path):
    folder = make_profile(tmp_path / "site", empty='Tag,Keyword\n"(0008,0050)",AccessionNumber\n'
                                                   '"(0010, 21b0)",AdditionalPatientHistory\n')
    assert "AdditionalPatientHistory" in generate_profile(folder)


@pytest.mark.parametrize("line, message", [
    ('"(0010,0020)",PatientName', "column Tag: tag (0010,0020) and keyword PatientName disagree"),
    ('"(0010,0010)",PatientNmae',
     "column Keyword: keyword 'PatientNmae' is not in the DICOM dictionary"),
    ('"0010,0010",PatientName', "column Tag: tag '0010,0010' is not written as (gggg,eeee)"),
    ('"(0010,00ZZ)",PatientName', "column Tag: tag '(0010,00ZZ)' is not written as (gggg,eeee)"),
    ('"(0029,1010)",PatientName', "column Tag: tag (0029,1010) is a private tag"),
    ('"(0010,0010)"', "expected 2 columns"),
    ('"(0012,0063)",DeidentificationMethod', "column Keyword: DeidentificationMethod is set "
                                             "from 'version'"),
])
def test_bad_rows_name_file_and_line(tmp_path, line, message):
    folder = make_profile(tmp_path / "site",
                          empty=f'Tag,Keyword\n"(0008,0050)",AccessionNumber\n{line}\n')
    with pytest.raises(PipelineError) as error:
        generate_profile(folder)
    assert f"{folder / 'empty.csv'}:3: " in str(error.value)
    assert message in str(error.value)


def test_duplicates_and_conflicting_actions(tmp_path):
    folder = make_profile(
        tmp_path / "site",
        empty='Tag,Keyword\n"(0010,0010)",PatientName\n"(0010,0010)",PatientName\n',
        remove='Tag,Keyword\n"(0010,0010)",PatientName\n')
    with pytest.raises(PipelineError) as error:
        generate_profile(folder)
    message = str(error.value)
    assert (f"{folder / 'empty.csv'}:3: column Keyword: PatientName is listed again (first at "
            f"{folder / 'empty.csv'}:2)") in message
    assert (f"{folder / 'remove.csv'}:2: column Keyword: PatientName has a second, different "
            f"action: removed here, emptied at {folder / 'empty.csv'}:2; keep one") in message


@pytest.mark.parametrize("header", ["Keyword,Tag", "Tag", "Tag,Keyword,Extra", ""])
def test_wrong_header(tmp_path, header):
    folder = make_profile(tmp_path / "site", remove=f'{header}\n"(0010,0010)",PatientName\n'
                          if header else "")
    with pytest.raises(PipelineError, match=r"remove.csv:1: the header must be Tag,Keyword"):
        generate_profile(folder)


def test_replacement_with_newline_is_rejected(tmp_path):
    folder = make_profile(tmp_path / "site",
                          replace='Tag,Keyword,Replacement\n"(0008,0080)",InstitutionName,"a\nb"\n')
    with pytest.raises(PipelineError, match="replace.csv:2: column Replacement: the "
                                            "replacement contains a line break"):
        generate_profile(folder)


def test_non_utf8_csv(tmp_path):
    folder = make_profile(tmp_path / "site")
    (folder / "replace.csv").write_bytes(
        'Tag,Keyword,Replacement\n"(0008,0080)",InstitutionName,Hôpital\n'.encode("latin-1"))
    with pytest.raises(PipelineError, match="replace.csv:2: not UTF-8"):
        generate_profile(folder)


@pytest.mark.parametrize("settings, message", [
    ("", "'version' must be a non-empty text"),
    ("version: v1\ncolour: blue\n", "unknown setting 'colour'"),
    ("version: v1\ndicom:\n  patient-age-from-birthdate: 'yes'\n", "must be bool"),
    ("version: v1\ndicom:\n  patient-age-units: years\n", "patient-age-units must be one of"),
    ("version: v1\ndicom:\n  remove-privte-tags: true\n", "unknown dicom option"),
])
def test_bad_settings(tmp_path, settings, message):
    folder = make_profile(tmp_path / "site", empty='Tag,Keyword\n"(0010,0010)",PatientName\n')
    (folder / "settings.yaml").write_text(settings)
    with pytest.raises(PipelineError, match=message):
        generate_profile(folder)


def test_settings_are_required(tmp_path):
    folder = make_profile(tmp_path / "site")
    (folder / "settings.yaml").unlink()
    with pytest.raises(PipelineError, match="settings.yaml: missing"):
        generate_profile(folder)


def test_keyword_lookup():
    rows = lookup_keywords("birthdate")
    assert ("(0010,0030)", "DA", "PatientBirthDate", "Patient's Birth Date") in rows
    assert all("birthdate" in (kw + name.replace(" ", "")).lower() for _, _, kw, name in rows)
    assert lookup_keywords("nosuchwordanywhere") == []


def write_files(folder: Path, files: dict[str, str | bytes]) -> Path:
    folder.mkdir(exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content if isinstance(content, bytes)
                                    else content.encode("utf-8"))
    return folder


SETTINGS = "version: Site_v1\n"
EMPTY = 'Tag,Keyword\n"(0010,0010)",PatientName\n'
REPLACE_HEADER = "Tag,Keyword,Replacement\n"
# Each bad profile, and the start of its one error: file:line, column and the problem.
BAD_PROFILES = {
    "no header": ({"empty.csv": '"(0010,0010)",PatientName\n'},
                  "empty.csv:1: the header must be Tag,Keyword"),
    "header after a blank line": ({"empty.csv": '\nTag,Keyword,Extra\n'},
                                  "empty.csv:2: the header must be Tag,Keyword"),
    "extra column": ({"empty.csv": EMPTY + '"(0010,0020)",PatientID,x\n'},
                     "empty.csv:3: expected 2 columns (Tag,Keyword), found 3"),
    "missing column": ({"replace.csv": REPLACE_HEADER + '"(0008,0080)",InstitutionName\n'},
                       "replace.csv:2: expected 3 columns (Tag,Keyword,Replacement), found 2"),
    "tag without parentheses": ({"remove.csv": 'Tag,Keyword\n0010 0020,PatientID\n'},
                                "remove.csv:2: column Tag: tag '0010 0020' is not written"),
    "tag too short": ({"remove.csv": 'Tag,Keyword\n"(10,20)",PatientID\n'},
                      "remove.csv:2: column Tag: tag '(10,20)' is not written"),
    "keyword in the tag column": ({"remove.csv": 'Tag,Keyword\nPatientID,"(0010,0020)"\n'},
                                  "remove.csv:2: column Tag: tag 'PatientID' is not written"),
    "unknown keyword": ({"remove.csv": 'Tag,Keyword\n"(0010,0020)",PatientIdentifier\n'},
                        "remove.csv:2: column Keyword: keyword 'PatientIdentifier' is not in"),
    "keyword in the wrong case": ({"remove.csv": 'Tag,Keyword\n"(0010,0020)",PatientId\n'},
                                  "remove.csv:2: column Keyword: keyword 'PatientId' is not in "
                                  "the DICOM dictionary (keywords are case-sensitive: "
                                  "PatientID?)"),
    "tag and keyword disagree": ({"remove.csv": 'Tag,Keyword\n"(0010,0030)",PatientID\n'},
                                 "remove.csv:2: column Tag: tag (0010,0030) and keyword "
                                 "PatientID disagree: PatientID is (0010,0020), (0010,0030) is "
                                 "PatientBirthDate"),
    "duplicate in one file": ({"empty.csv": EMPTY + '"(0010,0010)",PatientName\n'},
                              "empty.csv:3: column Keyword: PatientName is listed again"),
    "same action in two files": ({"empty.csv": EMPTY, "replace.csv": REPLACE_HEADER
                                  + '"(0010,0010)",PatientName,""\n'},
                                 "replace.csv:2: column Keyword: PatientName is listed again"),
    "emptied and removed": ({"empty.csv": EMPTY,
                             "remove.csv": 'Tag,Keyword\n"(0010,0010)",PatientName\n'},
                            "remove.csv:2: column Keyword: PatientName has a second, different "
                            "action: removed here, emptied at"),
    "emptied and replaced": ({"empty.csv": EMPTY, "replace.csv": REPLACE_HEADER
                              + '"(0010,0010)",PatientName,Anon\n'},
                             "replace.csv:2: column Keyword: PatientName has a second, "
                             "different action: replaced here, emptied at"),
    "replacement with a line break": (
        {"replace.csv": REPLACE_HEADER + '"(0008,0080)",InstitutionName,"a\nb"\n'},
        "replace.csv:2: column Replacement: the replacement contains a line break"),
    "replacement with a carriage return": (
        {"replace.csv": REPLACE_HEADER + '"(0008,0080)",InstitutionName,"a\rb"\n'},
        "replace.csv:2: column Replacement: the replacement contains a line break"),
    "replacement with a line separator": (
        {"replace.csv": REPLACE_HEADER + '"(0008,0080)",InstitutionName,a\u2028b\n'},
        "replace.csv:2: column Replacement: the replacement contains a line break"),
    "replacement with a NUL": (
        {"replace.csv": REPLACE_HEADER + '"(0008,0080)",InstitutionName,a\x00b\n'},
        "replace.csv:2: column Replacement: the replacement contains a line break or control"),
    "replacement with an invisible character": (
        {"replace.csv": REPLACE_HEADER + '"(0008,0080)",InstitutionName,a\u200bb\n'},
        "replace.csv:2: column Replacement: the replacement contains an invisible"),
    "replacement with a backslash": (
        {"replace.csv": REPLACE_HEADER + '"(0008,0080)",InstitutionName,a\\b\n'},
        "replace.csv:2: column Replacement: the replacement contains '\\'"),
    "unclosed quote": ({"replace.csv": REPLACE_HEADER + '"(0008,1030)",StudyDescription,b\n'
                                                      '"(0008,0080)",InstitutionName,"a\n'},
                       "replace.csv:3: column Replacement: the replacement contains a line"),
    "unclosed quote swallowing a row": (
        {"replace.csv": REPLACE_HEADER + '"(0008,0080)",InstitutionName,"a\n'
                                         '"(0008,1030)",StudyDescription,b\n'},
        "replace.csv:2: expected 3 columns"),
    "lines counted after a quoted line break": (
        {"replace.csv": REPLACE_HEADER + '"(0008,0080)\n",InstitutionName,a\n'
                                         '"(0008,1030)",StudyDescriptoin,b\n'},
        "replace.csv:4: column Keyword: keyword 'StudyDescriptoin'"),
    "CSV not UTF-8": ({"replace.csv": (REPLACE_HEADER + '"(0008,0080)",InstitutionName,A\n'
                                       '"(0008,1030)",StudyDescription,Caf\u00e9\n'
                                       ).encode("latin-1")},
                      "replace.csv:3: not UTF-8 text"),
    "CSV in UTF-16": ({"empty.csv": EMPTY.encode("utf-16")}, "empty.csv:1: not UTF-8 text"),
    "settings not UTF-8": ({"settings.yaml": "# Caf\u00e9\nversion: v1\n".encode("latin-1"),
                            "empty.csv": EMPTY}, "settings.yaml:1: not UTF-8 text"),
    "settings not YAML": ({"settings.yaml": "version: v1\ndicom: [a\n", "empty.csv": EMPTY},
                          "settings.yaml:3: not valid YAML"),
    "settings nested too deeply": ({"settings.yaml": "[" * 5000, "empty.csv": EMPTY},
                                   "settings.yaml: not valid YAML"),
    "settings with mixed keys": ({"settings.yaml": "version: v1\n1: a\nb: c\n",
                                  "empty.csv": EMPTY}, "settings.yaml: unknown setting '1'"),
    "settings a list": ({"settings.yaml": "- version\n", "empty.csv": EMPTY},
                        "settings.yaml: must be a mapping"),
    "version with a line break": ({"settings.yaml": 'version: "v1\\nv2"\n', "empty.csv": EMPTY},
                                  "settings.yaml: 'version' must be one line"),
    "version too long": ({"settings.yaml": f"version: {'v' * 65}\n", "empty.csv": EMPTY},
                         "settings.yaml: 'version' must be one line of at most 64"),
    "version a number": ({"settings.yaml": "version: 1.0\n", "empty.csv": EMPTY},
                         "settings.yaml: 'version' must be a non-empty text"),
    "misnamed CSV": ({"empty.csv": EMPTY, "Remove.csv": 'Tag,Keyword\n"(0010,0020)",PatientID\n'},
                     "Remove.csv: not read; the profile's CSV files must be named"),
    "no attributes": ({"empty.csv": "Tag,Keyword\n"}, "lists no attribute to empty, remove"),
}


# Cases with more than one problem (each is reported).
PROBLEM_COUNTS = {"settings with mixed keys": 2}


@pytest.mark.parametrize("case", BAD_PROFILES)
def test_bad_profiles_give_one_clear_error(tmp_path, case):
    files, message = BAD_PROFILES[case]
    folder = write_files(tmp_path / "site", {"settings.yaml": SETTINGS, **files})
    with pytest.raises(PipelineError) as error:
        generate_profile(folder)
    text = str(error.value)
    assert f"has {PROBLEM_COUNTS.get(case, 1)} problem(s):" in text
    # Each problem names its file (and line, column) in the profile folder.
    assert all(line.startswith(f"  - {folder}") for line in text.splitlines()[1:])
    assert message in text
    assert "Traceback" not in text


@pytest.mark.parametrize("make", ["folder", "dangling link"])
def test_action_file_that_is_not_a_file(tmp_path, make):
    folder = write_files(tmp_path / "site", {"settings.yaml": SETTINGS, "empty.csv": EMPTY})
    if make == "folder":
        (folder / "remove.csv").mkdir()
    else:
        os.symlink(tmp_path / "nowhere.csv", folder / "remove.csv")
    with pytest.raises(PipelineError, match="remove.csv: is not a readable file"):
        generate_profile(folder)


def test_spreadsheet_habits_in_profile_csvs_are_accepted(tmp_path):
    folder = write_files(tmp_path / "site", {
        "settings.yaml": SETTINGS,
        "empty.csv": '\ufeffTag , Keyword\r\n\r\n"(0010,0010)", PatientName \r\n',
        "remove.csv": "Tag,Keyword\n",  # a header only: nothing to remove
        "replace.csv": REPLACE_HEADER + '"(0008, 0080)",InstitutionName,"Site ""A"", Floor 2"\n'})
    fields = yaml.safe_load(generate_profile(folder))["dicom"]["fields"]
    assert fields == [{"name": "InstitutionName", "replace-with": 'Site "A", Floor 2'},
                      {"name": "PatientName", "replace-with": ""},
                      {"name": "DeidentificationMethod", "replace-with": "Site_v1"}]


def one_file_dataset() -> bytes:
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    dataset.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    dataset.SOPInstanceUID = "1.2.3.4"
    dataset.SpecificCharacterSet = "ISO_IR 192"
    dataset.Modality = "OT"
    dataset.StudyDescription = "original"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# Text that means something in YAML, or that a YAML 1.2 reader (Flywheel's engine) would take
# for a number, a boolean or null if it were written unquoted.
YAML_SPECIAL = ["Site: A", "a: b: c", "# not a comment", "x #y", "it's", "''", '"quoted"',
                "{a: 1}", "[1, 2]", "- item", "? key", "& anchor", "*alias", "!tag", "%TAG",
                "@at", "`tick", "| block", "> folded", "<<", "=", "~", "null", "true", "no",
                "Y", "0o17", "1e3", "0x1F", "0b101", "+1", "-.5", ".inf", ".NaN", "12:30:00",
                "2024-01-02", " leading space", "tab\tinside", "caf\u00e9 \u65e5\u672c",
                "\u00a0nbsp", "emoji \U0001F600", "---", "..."]


def test_yaml_special_replacements_reach_the_files_exactly(tmp_path):
    source = one_file_dataset()
    for number, value in enumerate(YAML_SPECIAL):
        cell = '"' + value.replace('"', '""') + '"'
        folder = write_files(tmp_path / f"site{number}", {
            "settings.yaml": SETTINGS,
            "replace.csv": REPLACE_HEADER + f'"(0008,1030)",StudyDescription,{cell}\n'})
        text = generate_profile(folder)
        fields = yaml.safe_load(text)["dicom"]["fields"]
        assert fields[0] == {"name": "StudyDescription", "replace-with": value}, text
        # Flywheel's engine reads the YAML the same way and writes the text unchanged.
        staged = bytes(Context().deid_profile(text).deid_header(source))
        written = pydicom.dcmread(io.BytesIO(staged)).StudyDescription
        assert written == value.rstrip(" "), (value, written)


def test_reference_profiles_are_the_official_files_named_in_their_readme():
    # They are the expected result, so they must never be regenerated from the CSV sources:
    # each file's sha256 is the one its README records for the official profile.
    import hashlib
    import re

    readme = (REFERENCE / "README.md").read_text()
    recorded = dict(re.findall(r"\| (penn_bsc_profile_v[\d.]+\.yaml) \| ([0-9a-f]{64}) \|",
                               readme))
    assert set(recorded) == {path.name for path in REFERENCE.glob("*.yaml")} != set()
    for name, digest in recorded.items():
        assert hashlib.sha256((REFERENCE / name).read_bytes()).hexdigest() == digest, name


def test_keyword_csv_rows_are_rows_the_profile_reader_accepts(tmp_path):
    # README: `deidpipe keyword birth --csv` prints rows to paste into a profile CSV.
    import shutil
    import subprocess
    import sys

    printed = subprocess.run([sys.executable, "-m", "deidpipe", "keyword", "birth", "--csv"],
                             capture_output=True, text=True, check=True).stdout
    rows = printed.splitlines()
    assert len(rows) >= 5 and any(",PatientBirthDate" in row for row in rows)
    profile_dir = tmp_path / "Pasted"
    profile_dir.mkdir()
    shutil.copy(REPO / "profiles" / "PennBrainScienceCenter" / "settings.yaml", profile_dir)
    (profile_dir / "empty.csv").write_text("Tag,Keyword\n" + printed)
    fields = {field["name"]: field for field in
              yaml.safe_load(generate_profile(profile_dir))["dicom"]["fields"]}
    import csv

    for tag, keyword in csv.reader(rows):
        assert fields[keyword]["replace-with"] == "", (tag, keyword)
