"""What TCIA's curators decided about private DICOM elements, for judging a staged file's.

Private elements are the usual place an identifier survives de-identification: the Basic
Profile says nothing about them. The Cancer Imaging Archive has curated thousands of them in
Posda, giving each a disposition (keep, delete, hash, offset ...). This module reads that table,
shipped in ``deidpipe/data/`` (see the README there for its source and licence), and answers
"what is known about the element at this place in the data set?" in O(1) dict look-ups, so
verification can ask for every private element of every file.

An element's place is a *path*: one segment per level from the top of the data set, sequence
items implied between segments. A segment is ``(group, element)`` for a standard element or
``(group, creator, element_byte)`` for a private one, where ``element_byte`` is the low 8 bits
of the element number: the block a creator reserves (the high byte) differs from file to file,
so only the creator string identifies the element.

Creators are compared after stripping surrounding padding (spaces, and the NULs some writers
use) but case-sensitively: the table spells no creator in two cases, and folding case could make
an element of an unknown creator look like a known one. Unknown is the cautious answer, since
verification treats an unknown private element as suspect.
"""

import functools
import re
from dataclasses import dataclass
from importlib import resources

from deidpipe.errors import PipelineError

DATA_PACKAGE = "deidpipe"
DATA_FILE = "data/private_tag_dispositions.tsv"
HEADER = ("pattern", "vr", "name", "disposition")
NAME = "TCIA Posda private tag dispositions"
VERSION = "PosdaTools 0377dd9, April 2025"
CREATOR_PADDING = " \x00"

# Most cautious first: when one pattern has rows with different dispositions (the table has a
# row per VR the element was seen with), the pattern takes the most cautious of them.
CAUTION_ORDER = ("d", "h", "o", "oi", "na", "", "k")
CAUTION_RANK = {"d": 0, "h": 1, "o": 2, "oi": 2, "na": 3, "": 4, "k": 5}

StandardSegment = tuple[int, int]
PrivateSegment = tuple[int, str, int]
Segment = StandardSegment | PrivateSegment
ElementPath = tuple[Segment, ...]

_SEGMENT = re.compile(
    r"\((?P<group>[0-9a-fA-F]{4}),"
    r'(?:"(?P<creator>[^"]*)",(?P<byte>[0-9a-fA-F]{2})|(?P<element>[0-9a-fA-F]{4}))\)'
)
_ITEM = re.compile(r"\[<\d+>\]")


@dataclass(frozen=True)
class PrivateElementInfo:
    """One pattern of the table: what TCIA decided, and the pattern it matched (which tells a
    report whether the element was found at its own path or through the top-level fallback)."""

    pattern: str
    # 'k' keep, 'd' delete, 'h' hash (a UID), 'o'/'oi' offset (a date / an integer date),
    # 'na' not applicable, '' no decision. Always lower case.
    disposition: str
    vr: str
    name: str


def parse_pattern(pattern: str) -> ElementPath:
    """Turn a Posda pattern such as ``(0040,030e)[<0>](00e1,"ELSCINT1",37)`` into a path.

    Raises ValueError saying what is wrong; the table parser adds the line number.
    """
    parts = _ITEM.split(pattern)
    segments: list[Segment] = []
    for part in parts:
        match = _SEGMENT.fullmatch(part)
        if match is None:
            raise ValueError(f'segment {part!r} is not (gggg,eeee) or (gggg,"creator",bb)')
        group = int(match["group"], 16)
        if match["creator"] is None:
            segments.append((group, int(match["element"], 16)))
        elif group % 2 == 0:
            raise ValueError(f"segment {part!r} has a private creator in even group")
        else:
            segments.append(
                (group, match["creator"].strip(CREATOR_PADDING), int(match["byte"], 16))
            )
    return tuple(segments)


def parse_table(
    text: str, source: str = DATA_FILE
) -> tuple[dict[ElementPath, PrivateElementInfo], int]:
    """Parse the TSV text into {path: info} and the number of data rows.

    A malformed row is a broken package, not something to skip: skipping would silently make
    an element unknown (or worse, let a duplicate 'k' row win), so it raises PipelineError
    naming the line.
    """
    lines = text.splitlines()
    if not lines or tuple(lines[0].split("\t")) != HEADER:
        raise PipelineError(f"{source}, line 1: expected the header {'<tab>'.join(HEADER)}")
    table: dict[ElementPath, PrivateElementInfo] = {}
    rows = 0
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) != len(HEADER):
            raise PipelineError(
                f"{source}, line {number}: expected {len(HEADER)} tab-separated columns "
                f"(pattern, vr, name, disposition), found {len(columns)}"
            )
        pattern, vr, name, disposition = columns
        disposition = disposition.strip().lower()
        if disposition not in CAUTION_RANK:
            raise PipelineError(
                f"{source}, line {number}: unknown disposition {disposition!r} "
                f"(expected one of {', '.join(repr(d) for d in CAUTION_ORDER)})"
            )
        try:
            path = parse_pattern(pattern)
        except ValueError as error:
            raise PipelineError(f"{source}, line {number}: bad pattern: {error}") from None
        rows += 1
        info = PrivateElementInfo(pattern, disposition, vr.strip(), name.strip())
        known = table.get(path)
        if known is None or CAUTION_RANK[disposition] < CAUTION_RANK[known.disposition]:
            table[path] = info
    return table, rows


class KnowledgeBase:
    """The parsed table. Build it once (``load_knowledge_base``) and ask ``lookup`` per element."""

    def __init__(self, text: str, source: str = DATA_FILE) -> None:
        self._table, self.rows = parse_table(text, source)
        self.source = f"{NAME} ({VERSION})"

    @property
    def patterns(self) -> int:
        """Distinct element paths (fewer than rows: the table has a row per VR seen)."""
        return len(self._table)

    def describe(self) -> dict[str, str | int]:
        """Which knowledge base judged the private elements, for the verification report."""
        return {"name": NAME, "version": VERSION, "rows": self.rows}

    def lookup(self, path: ElementPath) -> PrivateElementInfo | None:
        """What is known about the element at ``path``, or None if the table does not know it.

        The exact path is tried first. Failing that, the leaf alone at top level: a private
        element the table knows at top level is the same element when it turns up inside a
        sequence (``info.pattern`` then shows the top-level pattern).
        """
        table = self._table
        info = table.get(path)
        if info is not None:
            return info
        canonical = tuple(_canonical(segment) for segment in path)
        if canonical != path:
            info = table.get(canonical)
            if info is not None:
                return info
        if len(canonical) > 1:
            return table.get(canonical[-1:])
        return None


def _canonical(segment: Segment) -> Segment:
    """The segment with its creator's padding stripped (the table's spelling)."""
    if len(segment) == 3:
        return (segment[0], segment[1].strip(CREATOR_PADDING), segment[2])
    return segment


def path_segment(tag: int, private_creator: str | None) -> Segment:
    """The path segment of a pydicom element, from its tag and ``DataElement.private_creator``.

    A private element is one in an odd group, element 0x1000 or above, with a creator (an empty
    creator value counts: the table has rows for creator ""). Everything else is a standard
    segment: standard elements, private creator elements (gggg,00xx) and private elements whose
    block has no creator, which the table cannot identify (they look up as unknown).
    """
    group, element = int(tag) >> 16, int(tag) & 0xFFFF
    if group % 2 == 1 and element >= 0x1000 and private_creator is not None:
        return (group, private_creator.strip(CREATOR_PADDING), element & 0xFF)
    return (group, element)


@functools.cache
def load_knowledge_base() -> KnowledgeBase:
    """The knowledge base from the packaged TSV, parsed once per process."""
    resource = resources.files(DATA_PACKAGE).joinpath(DATA_FILE)
    return KnowledgeBase(resource.read_text(encoding="utf-8"), source=f"deidpipe/{DATA_FILE}")
