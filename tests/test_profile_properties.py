"""Property tests: any profile folder gives a profile or a PipelineError, never another
exception; and any replacement text that is accepted comes back exactly from the YAML."""

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deidpipe.errors import PipelineError
from deidpipe.profile import build_profile, render_profile

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
FILES = ("empty.csv", "remove.csv", "replace.csv", "settings.yaml")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("profile_properties")


def check(base: Path, files: dict[str, bytes]) -> dict | None:
    """Build a profile from ``files`` in a fresh folder: its document, or None on PipelineError.

    A profile that builds must also come back unchanged from its YAML text.
    """
    with tempfile.TemporaryDirectory(dir=base) as folder:
        profile_dir = Path(folder) / "site"
        profile_dir.mkdir()
        for name, data in files.items():
            (profile_dir / name).write_bytes(data)
        try:
            document, version = build_profile(profile_dir)
        except PipelineError as error:
            assert str(error).strip(), "an error without a message"
            return None
    text = render_profile(document, "site")
    assert yaml.safe_load(text) == document
    assert document["dicom"]["fields"][-1] == {"name": "DeidentificationMethod",
                                               "replace-with": version}
    return document


GOOD_SETTINGS = b"version: Site_v1\n"
GOOD_EMPTY = b'Tag,Keyword\n"(0010,0010)",PatientName\n'
GOOD_REMOVE = b'Tag,Keyword\n"(0010,0020)",PatientID\n'


@SETTINGS
@given(name=st.sampled_from(FILES), data=st.binary(max_size=300))
def test_any_bytes_in_any_file(base: Path, name: str, data: bytes) -> None:
    files = {"settings.yaml": GOOD_SETTINGS, "empty.csv": GOOD_EMPTY}
    files[name] = data
    check(base, files)


@SETTINGS
@given(name=st.sampled_from(FILES), text=st.text(max_size=300))
def test_any_text_in_any_file(base: Path, name: str, text: str) -> None:
    files = {"settings.yaml": GOOD_SETTINGS, "remove.csv": GOOD_REMOVE}
    files[name] = text.encode("utf-8")
    check(base, files)


TAG = st.one_of(
    st.sampled_from(["(0010,0010)", "(0010,0020)", "(0008,0080)", "(0008,1030)",
                     "(0012,0063)", "(0029,1010)", "(0010, 0010)", "0010,0010", "(FFFF,FFFF)",
                     "(0010,001)", "", "(0008,0080"]),
    st.text(max_size=12),
)
KEYWORD = st.one_of(
    st.sampled_from(["PatientName", "PatientID", "InstitutionName", "StudyDescription",
                     "DeidentificationMethod", "PatientNmae", "", "patientname"]),
    st.text(max_size=12),
)
REPLACEMENT = st.one_of(st.sampled_from(["", "X", ": x", "# y", "'", '"', "{a}", "- b",
                                         "0o17", "1e3", "yes", "null", "a\\b", "a\nb"]),
                        st.text(max_size=12))


def csv_cell(text: str, quote: bool) -> str:
    return '"' + text.replace('"', '""') + '"' if quote else text


@st.composite
def csv_files(draw: st.DrawFn, header: list[str]) -> bytes:
    rows = [header] if draw(st.integers(0, 9)) else []
    for _ in range(draw(st.integers(0, 5))):
        cells = [draw(TAG), draw(KEYWORD)]
        if len(header) == 3 or draw(st.integers(0, 9)) == 0:
            cells.append(draw(REPLACEMENT))
        rows.append(cells[:draw(st.sampled_from([len(cells), len(cells), 1, 4]))])
    end = draw(st.sampled_from(["\n", "\r\n"]))
    text = end.join(",".join(csv_cell(cell, draw(st.booleans())) for cell in row)
                    for row in rows) + end
    if draw(st.booleans()):
        text = "\ufeff" + text
    return text.encode(draw(st.sampled_from(["utf-8", "utf-8", "latin-1"])), errors="replace")


SETTINGS_TEXT = st.one_of(
    st.sampled_from([b"version: Site_v1\n", b"version: v1\ndicom: {date-increment: 3}\n",
                     b"version: [1\n", b"1: a\nb: c\n", b"version: 'a\\\\b'\n", b"- 1\n",
                     b"version: v1\ndicom: {1: 2, x: y}\n", b"[" * 2000]),
    st.text(max_size=40).map(lambda text: text.encode("utf-8")),
)


@SETTINGS
@given(replacement=st.text(max_size=30))
def test_accepted_replacements_come_back_exactly(base: Path, replacement: str) -> None:
    cell = '"' + replacement.replace('"', '""') + '"'
    document = check(base, {"settings.yaml": GOOD_SETTINGS,
                            "replace.csv": ("Tag,Keyword,Replacement\n"
                                            f'"(0008,0080)",InstitutionName,{cell}\n'
                                            ).encode()})
    if document is not None:
        assert document["dicom"]["fields"][0] == {"name": "InstitutionName",
                                                  "replace-with": replacement}
    else:
        # Refused only for a reason the generator documents: a control, invisible or
        # unassigned character, or a backslash.
        assert "\\" in replacement or not all(
            char.isprintable() or char in " \t" for char in replacement)


# ---- valid profile folders, written in every way a person may write them --------------------

def _dictionary_keywords() -> list[str]:
    from pydicom.datadict import keyword_dict

    return sorted(keyword for keyword in keyword_dict if keyword != "DeidentificationMethod")


# Text a replacement or version may hold: any printable character but '\\' (a tab too).
VALUE_TEXT = st.text(alphabet=st.characters(
    blacklist_categories=("Cc", "Cs", "Co", "Cn", "Cf", "Zl", "Zp"),
    blacklist_characters="\\"), max_size=20)
DICOM_OPTION_VALUES = {
    "patient-age-from-birthdate": st.booleans(), "patient-age-units": st.sampled_from("YMWD"),
    "date-increment": st.integers(-3650, 3650), "recurse-sequence": st.booleans(),
    "remove-private-tags": st.booleans(), "remove-undefined": st.booleans()}


def _tag_text(draw: st.DrawFn, keyword: str) -> str:
    """The keyword's tag as a person may type it: (gggg,eeee), any case, spaces inside."""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    assert tag is not None
    group, element = f"{tag >> 16:04X}", f"{tag & 0xFFFF:04X}"
    if draw(st.booleans()):
        group, element = group.lower(), element.lower()
    space = draw(st.sampled_from(["", "", " "]))
    return f"({space}{group}{space},{space}{element}{space})"


def _csv_text(draw: st.DrawFn, header: list[str], rows: list[list[str]]) -> bytes:
    lines = []
    for cells in [header, *rows]:
        if draw(st.integers(0, 9)) == 0:
            lines.append(draw(st.sampled_from(["", " ", ",", " , "])))  # a blank line
        lines.append(",".join(
            # A cell with a comma, quote or leading space must be quoted; others may be.
            csv_cell(cell, draw(st.booleans()) or any(c in cell for c in ',"\r\n')
                     or cell != cell.strip())
            for cell in cells))
    end = draw(st.sampled_from(["\n", "\r\n"]))
    text = end.join(lines) + draw(st.sampled_from([end, ""]))
    return (draw(st.sampled_from(["", "\ufeff"])) + text).encode("utf-8")


@st.composite
def valid_profile_folders(draw: st.DrawFn) -> tuple[dict[str, bytes], dict]:
    """The files of a profile folder that must build, and the document it must build to."""
    keywords = draw(st.lists(st.sampled_from(_dictionary_keywords()), min_size=1, max_size=12,
                             unique=True))
    rows: dict[str, list[list[str]]] = {name: [] for name in ACTION_NAMES}
    fields = []
    for keyword in keywords:
        action = draw(st.sampled_from(ACTION_NAMES))
        padded = draw(st.sampled_from(["", " "])) + keyword + draw(st.sampled_from(["", " "]))
        cells = [_tag_text(draw, keyword), padded]
        if action == "replace.csv":
            replacement = draw(VALUE_TEXT)
            cells.append(replacement)
            fields.append({"name": keyword, "replace-with": replacement})
        elif action == "empty.csv":
            fields.append({"name": keyword, "replace-with": ""})
        else:
            fields.append({"name": keyword, "remove": True})
        rows[action].append(cells)
    files = {}
    for name, header in (("empty.csv", ["Tag", "Keyword"]), ("remove.csv", ["Tag", "Keyword"]),
                         ("replace.csv", ["Tag", "Keyword", "Replacement"])):
        if rows[name] or draw(st.booleans()):  # a file may be there with its header alone
            files[name] = _csv_text(draw, header, rows[name])
    version = draw(VALUE_TEXT.filter(lambda text: text.strip() and len(text) <= 64))
    options: dict = {}
    for key in draw(st.lists(st.sampled_from(sorted(DICOM_OPTION_VALUES)), unique=True,
                             max_size=3)):
        options[key] = draw(DICOM_OPTION_VALUES[key])
    settings_document: dict = {"version": version}
    if options:
        settings_document["dicom"] = options
    files["settings.yaml"] = yaml.safe_dump(settings_document, allow_unicode=True).encode()
    fields.sort(key=lambda field: field["name"])
    fields.append({"name": "DeidentificationMethod", "replace-with": version.strip()})
    return files, {"dicom": {**{key: options[key] for key in sorted(options)},
                             "fields": fields}}


ACTION_NAMES = ("empty.csv", "remove.csv", "replace.csv")


def test_valid_profile_folders_build_to_what_they_say(base: Path) -> None:
    """The generator writes folders a person could write; every one must build, to exactly
    the fields and options it lists (and come back from its YAML, as check() asserts)."""
    built = []

    @SETTINGS
    @given(folder=valid_profile_folders())
    def build(folder: tuple[dict[str, bytes], dict]) -> None:
        files, expected = folder
        document = check(base, files)
        assert document == expected
        built.append(document)

    build()
    assert len(built) >= 150  # examples checked, of SETTINGS' 200


def test_csv_shaped_profiles_are_refused_with_a_message(base: Path) -> None:
    """The CSV-shaped generator above writes broken folders on purpose (bad tags, unknown
    keywords, missing columns, other encodings, broken YAML): each gives a profile or a
    PipelineError with a message (check()), never another exception, and most are refused."""
    outcomes: list[bool] = []

    @SETTINGS
    @given(empty=csv_files(["Tag", "Keyword"]), remove=csv_files(["Tag", "Keyword"]),
           replace=csv_files(["Tag", "Keyword", "Replacement"]), settings_yaml=SETTINGS_TEXT)
    def build(empty: bytes, remove: bytes, replace: bytes, settings_yaml: bytes) -> None:
        outcomes.append(check(base, {"empty.csv": empty, "remove.csv": remove,
                                     "replace.csv": replace,
                                     "settings.yaml": settings_yaml}) is not None)

    build()
    assert len(outcomes) >= 150
    assert outcomes.count(False) >= 100, f"{outcomes.count(False)} of {len(outcomes)} refused"
