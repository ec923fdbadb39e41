"""The private-tag knowledge base: TCIA's table is packaged, parsed whole and looked up right."""

import tomllib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

import deidpipe
from deidpipe.errors import PipelineError
from deidpipe.private_knowledge import (
    DATA_FILE,
    KnowledgeBase,
    PrivateElementInfo,
    Segment,
    load_knowledge_base,
    parse_pattern,
    parse_table,
    path_segment,
)

ROOT = Path(__file__).resolve().parents[1]
HEADER = "pattern\tvr\tname\tdisposition\n"


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return load_knowledge_base()


def test_packaged_table_has_every_row(kb: KnowledgeBase) -> None:
    assert kb.rows == 5055
    # One row per VR an element was seen with: fewer distinct paths than rows.
    assert kb.patterns == 4100
    assert kb.describe() == {
        "name": "TCIA Posda private tag dispositions",
        "version": "PosdaTools 0377dd9, April 2025",
        "rows": 5055,
    }
    assert "PosdaTools 0377dd9" in kb.source


def test_loaded_once() -> None:
    assert load_knowledge_base() is load_knowledge_base()


def test_data_comes_from_the_package_not_from_outside() -> None:
    resource = resources.files("deidpipe").joinpath(DATA_FILE)
    assert resource.is_file()
    package_dir = Path(deidpipe.__file__).resolve().parent
    assert Path(str(resource)).resolve().is_relative_to(package_dir)
    text = resource.read_text(encoding="utf-8")
    assert len(text.splitlines()) - 1 == load_knowledge_base().rows
    # And it ships in the wheel / sdist, not only in a source checkout.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "data/*" in pyproject["tool"]["setuptools"]["package-data"]["deidpipe"]


def test_packaged_readme_names_source_and_licence() -> None:
    data = resources.files("deidpipe").joinpath("data")
    readme = data.joinpath("README.md").read_text(encoding="utf-8")
    for needed in (
        "UAMS-DBMI/PosdaTools",
        "0377dd9",
        "element_seen",
        "posda_phi_simple_data.sql",
        "Apache",
        "LICENSE-PosdaTools.txt",
        "5,055",
        "unchanged",
    ):
        assert needed in readme, needed
    licence = data.joinpath("LICENSE-PosdaTools.txt").read_text(encoding="utf-8")
    assert "Apache License" in licence and "Version 2.0" in licence


@pytest.mark.parametrize(
    ("path", "disposition", "vr", "name"),
    [
        # keep
        (((0x7005, "TOSHIBA_MEC_CT3", 0x06),), "k", "SH", "Cardiac Reconstruction Mode"),
        # delete
        (((0x7039, "CtProjectionData-MayoClinc-v1", 0x05),), "d", "UN", "Unknown"),
        # hash: three rows (OB, LO, UI), all 'h'; the first row's VR is reported
        (((0x0009, "GEMS_IDEN_01", 0xE3),), "h", "OB", "EquipmentUID"),
        # offset a date
        (((0x0017, "GEMS_PETD_01", 0x04),), "o", "DT", "cal_datetime"),
        (((0x0009, "GEMS_IDEN_01", 0xE9),), "oi", "SL", "ActualSeriesDataTimeStamp"),
        # upper-case 'K' in the file; creator with two inner spaces, which are kept
        (((0x0029, "SIEMENS CM VA0  CMS", 0x20),), "k", "CS", "PixelQualityCode"),
        # empty creator, empty disposition
        (((0x0029, "", 0x16),), "d", "UN", "Unknown"),
        (
            ((0x0011, "PICKER PQ2000+ CT IMAGE PRIVATE DATA", 0x55),),
            "",
            "UN",
            "Unknown",
        ),
        # private sequence > private element
        (
            ((0x0023, "FDMS 1.0", 0x20), (0x0025, "FDMS 1.0", 0x90)),
            "d",
            "OB",
            "Unknown:Unknown",
        ),
        # standard sequences in the path
        (
            (
                (0x5200, 0x9229),
                (0x0008, 0x1140),
                (0x2005, "Philips MR Imaging DD 005", 0x11),
            ),
            "d",
            "UI",
            "Shared Functional Groups Sequence:Referenced Image Sequence:"
            "MF Private Referenced SOP Instance UID",
        ),
        # a standard leaf under a private sequence
        (
            ((0x0051, "GEMS_CT_VES_01", 0x01), (0x0008, 0x0050)),
            "d",
            "SH",
            "CTVESequence:Accession Number",
        ),
    ],
)
def test_known_rows_resolve(
    kb: KnowledgeBase, path: tuple[Segment, ...], disposition: str, vr: str, name: str
) -> None:
    info = kb.lookup(path)
    assert info is not None
    assert (info.disposition, info.vr, info.name) == (disposition, vr, name)
    assert parse_pattern(info.pattern) == path


def test_exact_path_beats_the_top_level_row(kb: KnowledgeBase) -> None:
    # TCIA keeps Total Dose Savings inside the Exposure Dose Sequence, deletes it at top level.
    nested = kb.lookup(((0x0040, 0x030E), (0x00E1, "ELSCINT1", 0x37)))
    top = kb.lookup(((0x00E1, "ELSCINT1", 0x37),))
    assert nested is not None and top is not None
    assert (nested.disposition, nested.pattern) == ("k", '(0040,030e)[<0>](00e1,"ELSCINT1",37)')
    assert (top.disposition, top.pattern) == ("d", '(00e1,"ELSCINT1",37)')


def test_nested_element_falls_back_to_its_top_level_row(kb: KnowledgeBase) -> None:
    path = ((0x5200, 0x9229), (0x0008, 0x1140), (0x0019, "GEMS_ACQU_01", 0x47))
    info = kb.lookup(path)
    assert info == kb.lookup(((0x0019, "GEMS_ACQU_01", 0x47),))
    assert info is not None and info.disposition == "k"
    assert info.pattern == '(0019,"GEMS_ACQU_01",47)'
    # Only the leaf falls back: a standard leaf is not a private row at top level.
    assert kb.lookup(((0x0019, "GEMS_ACQU_01", 0x47), (0x0008, 0x0050))) is None


def test_creator_padding_is_ignored_but_case_is_not(kb: KnowledgeBase) -> None:
    expected = kb.lookup(((0x0019, "GEMS_ACQU_01", 0x47),))
    assert expected is not None
    for creator in ("GEMS_ACQU_01 ", " GEMS_ACQU_01  ", "GEMS_ACQU_01\x00"):
        assert kb.lookup(((0x0019, creator, 0x47),)) == expected, repr(creator)
    padded_nested = ((0x0023, "FDMS 1.0 ", 0x20), (0x0025, "FDMS 1.0 ", 0x90))
    found = kb.lookup(padded_nested)
    assert found is not None and found.pattern == '(0023,"FDMS 1.0",20)[<0>](0025,"FDMS 1.0",90)'
    assert kb.lookup(((0x0019, "gems_acqu_01", 0x47),)) is None


def test_hex_case_in_patterns_does_not_matter() -> None:
    lower = parse_pattern('(00e1,"ELSCINT1",3a)[<0>](0040,030e)')
    assert parse_pattern('(00E1,"ELSCINT1",3A)[<3>](0040,030E)') == lower
    assert lower == ((0x00E1, "ELSCINT1", 0x3A), (0x0040, 0x030E))
    table, rows = parse_table(HEADER + '(00E1,"ELSCINT1",3A)\tDS\tThing\tK\n')
    assert rows == 1
    assert table[((0x00E1, "ELSCINT1", 0x3A),)] == PrivateElementInfo(
        '(00E1,"ELSCINT1",3A)', "k", "DS", "Thing"
    )


def test_unknown_elements_are_none(kb: KnowledgeBase) -> None:
    assert kb.lookup(((0x0019, "NO SUCH CREATOR", 0x47),)) is None
    assert kb.lookup(((0x0019, "GEMS_ACQU_01", 0xFF),)) is None
    assert kb.lookup(((0x0010, 0x0010),)) is None
    assert kb.lookup(((0x0008, 0x1140), (0x0019, "NO SUCH CREATOR", 0x47))) is None
    assert kb.lookup(()) is None


def test_conflicting_rows_take_the_most_cautious_disposition(kb: KnowledgeBase) -> None:
    # Rows K (IS), k (UN), d (OB) for one pattern: delete wins.
    info = kb.lookup(((0x0053, "GEHC_CT_ADVAPP_001", 0x68),))
    assert info is not None and (info.disposition, info.vr) == ("d", "OB")
    # d (OB) and h (UI): delete beats hash.
    uid = kb.lookup(((0x7005, "TOSHIBA_MEC_CT3", 0x16),))
    assert uid is not None and uid.disposition == "d"
    order = ["k", "", "na", "o", "h", "d"]
    pairs = [*zip(order, order[1:], strict=False), ("na", "oi"), ("oi", "h")]
    for weaker, stronger in pairs:
        lines = [f'(0019,"X",01)\tUN\tA\t{weaker}', f'(0019,"X",01)\tUN\tA\t{stronger}']
        for text in (HEADER + "\n".join(lines), HEADER + "\n".join(reversed(lines))):
            table, rows = parse_table(text)
            assert rows == 2 and len(table) == 1
            assert table[((0x0019, "X", 0x01),)].disposition == stronger
    # 'o' and 'oi' are equally cautious (both offset a date): the first row stands.
    table, _ = parse_table(HEADER + '(0019,"X",01)\tUN\tA\toi\n(0019,"X",01)\tUN\tA\to\n')
    assert table[((0x0019, "X", 0x01),)].disposition == "oi"


@pytest.mark.parametrize(
    ("bad_line", "problem"),
    [
        ('(0019,"GEMS_ACQU_01",47)\tOB\tViewCompressionFactor', "columns"),
        ('(0019,"GEMS_ACQU_01",47)\tOB\tViewCompressionFactor\tkeep', "disposition"),
        ('(0019,"GEMS_ACQU_01",470)\tOB\tViewCompressionFactor\tk', "pattern"),
        ("(0019,GEMS_ACQU_01,47)\tOB\tViewCompressionFactor\tk", "pattern"),
        ('(0019,"GEMS_ACQU_01",47)[<0>]\tOB\tViewCompressionFactor\tk', "pattern"),
        ('(0018,"GEMS_ACQU_01",47)\tOB\tViewCompressionFactor\tk', "even group"),
    ],
)
def test_malformed_line_names_its_number(bad_line: str, problem: str) -> None:
    text = HEADER + '(0019,"GEMS_ACQU_01",47)\tSS\tViewCompressionFactor\tk\n' + bad_line + "\n"
    with pytest.raises(PipelineError, match=r"line 3\b") as raised:
        parse_table(text, source="test.tsv")
    assert "test.tsv" in str(raised.value) and problem in str(raised.value)


def test_missing_header_is_an_error() -> None:
    with pytest.raises(PipelineError, match="line 1"):
        parse_table('(0019,"GEMS_ACQU_01",47)\tSS\tViewCompressionFactor\tk\n')


@pytest.mark.parametrize(
    ("tag", "creator", "segment"),
    [
        (0x00191047, "GEMS_ACQU_01", (0x0019, "GEMS_ACQU_01", 0x47)),
        (0x00E11137, "ELSCINT1 ", (0x00E1, "ELSCINT1", 0x37)),  # another block, padded
        (0x00291016, "", (0x0029, "", 0x16)),  # an empty creator is still a creator
        (0x00291016, None, (0x0029, 0x1016)),  # no creator: cannot be identified
        (0x00190010, None, (0x0019, 0x0010)),  # the private creator element itself
        (0x00080050, None, (0x0008, 0x0050)),
        (0x00100010, "GEMS_ACQU_01", (0x0010, 0x0010)),  # even group: standard
    ],
)
def test_path_segment(tag: int, creator: str | None, segment: Segment) -> None:
    assert path_segment(tag, creator) == segment


def _paths(ds: Dataset, parent: tuple[Segment, ...] = ()) -> Iterator[tuple[int, tuple]]:
    """(tag, path) of every element, the way verification walks a data set."""
    for element in ds:
        path = (*parent, path_segment(element.tag, element.private_creator))
        yield element.tag, path
        if element.VR == "SQ":
            for item in element.value:
                yield from _paths(item, path)


def test_pydicom_dataset_elements_resolve(kb: KnowledgeBase) -> None:
    ds = Dataset()
    ds.PatientID = "ANON"
    block = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
    block.add_new(0x47, "OB", b"\x01\x00")
    # ELSCINT1 in the second block (00e1,0011), its value padded as read from a file.
    ds.add_new(0x00E10010, "LO", "OTHER VENDOR")
    ds.add_new(0x00E10011, "LO", "ELSCINT1 ")
    ds.add_new(0x00E11137, "DS", "1.5")
    item = Dataset()
    item.add_new(0x00E10010, "LO", "ELSCINT1")
    item.add_new(0x00E11037, "DS", "2.5")
    ds.add_new(0x0040030E, "SQ", Sequence([item]))  # Exposure Dose Sequence
    ds.add_new(0x00291016, "UN", b"\x00\x00")  # orphan: no creator for block 10

    found = {tag: kb.lookup(path) for tag, path in _paths(ds)}
    dispositions = {tag: (info.disposition if info else None) for tag, info in found.items()}
    assert dispositions[0x00191047] == "k"
    assert dispositions[0x00E11137] == "d"  # top level: deleted
    assert dispositions[0x00E11037] == "k"  # inside the Exposure Dose Sequence: kept
    assert dispositions[0x00291016] is None
    assert dispositions[0x00100020] is None
    assert dispositions[0x00190010] is None
