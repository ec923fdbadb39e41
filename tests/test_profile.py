from pathlib import Path

import pytest
import yaml
from fw_file_rs.dcm import Context

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
    ('"(0010,0020)",PatientName', "tag (0010,0020) and keyword PatientName disagree"),
    ('"(0010,0010)",PatientNmae', "keyword 'PatientNmae' is not in the DICOM dictionary"),
    ('"0010,0010",PatientName', "is not written as (gggg,eeee)"),
    ('"(0010,00ZZ)",PatientName', "is not written as (gggg,eeee)"),
    ('"(0029,1010)",PatientName', "private tag"),
    ('"(0010,0010)"', "expected 2 columns"),
    ('"(0012,0063)",DeidentificationMethod', "set from 'version'"),
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
    assert f"{folder / 'empty.csv'}:3: PatientName is listed again (first at " in message
    assert f"{folder / 'remove.csv'}:2: PatientName has a second, different action" in message


@pytest.mark.parametrize("header", ["Keyword,Tag", "Tag", "Tag,Keyword,Extra", ""])
def test_wrong_header(tmp_path, header):
    folder = make_profile(tmp_path / "site", remove=f'{header}\n"(0010,0010)",PatientName\n'
                          if header else "")
    with pytest.raises(PipelineError, match=r"remove.csv:1: the header must be Tag,Keyword"):
        generate_profile(folder)


def test_replacement_with_newline_is_rejected(tmp_path):
    folder = make_profile(tmp_path / "site",
                          replace='Tag,Keyword,Replacement\n"(0008,0080)",InstitutionName,"a\nb"\n')
    with pytest.raises(PipelineError, match="replace.csv:2: the replacement contains a line"):
        generate_profile(folder)


def test_non_utf8_csv(tmp_path):
    folder = make_profile(tmp_path / "site")
    (folder / "replace.csv").write_bytes(
        'Tag,Keyword,Replacement\n"(0008,0080)",InstitutionName,Hôpital\n'.encode("latin-1"))
    with pytest.raises(PipelineError, match="replace.csv: not UTF-8"):
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
