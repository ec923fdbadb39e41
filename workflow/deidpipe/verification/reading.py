"""Reading staged and source files for verification: the project's reader where it stands for the
file exactly, pydicom otherwise; element names, texts and tag paths as reports show them."""

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.multival import MultiValue

from deidpipe.dicom.datasets import ConversionMemo, NotPlain, read_file
from deidpipe.dicom.reader import (
    IMAGE_DATA_TAGS,
    PIXEL_DATA,
    SOP_INSTANCE_UID,
    UNDEFINED_LENGTH,
    Element,
    mapped,
)
from deidpipe.identifiers import (
    Nesting,
    iter_elements,
)

# ---- reading DICOM ---------------------------------------------------------------------------

def element_name(element: DataElement) -> str:
    name = element.keyword or (f"private tag [{element.private_creator}]"
                               if element.tag.is_private and element.private_creator
                               else "private tag" if element.tag.is_private else "unknown tag")
    return f"{name} ({element.tag.group:04X},{element.tag.element:04X})"


def element_text(element: DataElement) -> str:
    """An element's value as text; binary values (OB/UN...) decoded as Latin-1 so that text
    hidden in them is seen."""
    value = element.value
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(part) for part in value)
    return str(value)


def walk_elements(dataset: Dataset) -> Iterator[tuple[Nesting, DataElement]]:
    """Every non-sequence element, depth first, in tag order, pixel data skipped."""
    for nesting, element in iter_elements(dataset):
        if int(element.tag) not in IMAGE_DATA_TAGS:
            yield nesting, element


def tag_path(nesting: Nesting, element: DataElement) -> str:
    """A tag path people can read: 'RequestAttributesSequence (0040,0275) item 1 >
    ScheduledProcedureStepDescription (0040,0007)'."""
    return " > ".join([*(f"{element_name(sequence)} item {number}"
                         for sequence, number in nesting), element_name(element)])


# What pydicom raises on damaged data (OSError: 'No tag to read at file position ...').
READ_ERRORS = (InvalidDicomError, BytesLengthException, ValueError, EOFError,
               NotImplementedError, KeyError, TypeError, AttributeError, OSError)


@dataclass
class StagedRead:
    dataset: Dataset | None  # every element readable (the header alone if the end is not)
    pixel_end: int | None  # byte offset just after the pixel data, when known
    problem: str  # '' when the whole file was read
    pixel_start: int | None = None  # byte offset of the first image data element, if any
    # Top-level element value bytes as stored, before conversion (to compare with the source's).
    raw_values: dict[int, bytes | None] = field(default_factory=dict)
    # Where each element's value lies in the file, by start offset: a byte-scan hit is
    # attributed to the element that holds it.
    spans: list["ValueSpan"] = field(default_factory=list)
    # The bytes of uncompressed pixel data (start, end): numbers, not text; the raw scan
    # skips them (compressed data is scanned: a JPEG comment segment can hold text).
    native_pixels: tuple[int, int] | None = None


@dataclass(frozen=True)
class ValueSpan:
    """The bytes ``start:end`` of the file are the value of the element ``tag`` of the item
    reached from ``root`` by ``path`` ((sequence tag, item number) pairs, outermost first)."""

    start: int
    end: int
    root: Dataset
    path: tuple[tuple[int, int], ...]
    tag: int

    def located(self) -> tuple[Nesting, DataElement]:
        nesting: Nesting = ()
        dataset = self.root
        for sequence_tag, number in self.path:
            sequence = dataset[sequence_tag]
            nesting = (*nesting, (sequence, number))
            dataset = sequence.value[number - 1]
        return nesting, dataset[self.tag]


# Values converted in this process, reused across the session's files (a series shares most of
# its header): see deidpipe.dicom.datasets.
_conversion_memo: ConversionMemo = {}


def read_staged(data: bytes) -> StagedRead:
    """Every element of a staged file, read with the project's reader; a file that reader
    does not stand for exactly (damaged, unusual) is read by pydicom instead."""
    try:
        read = read_file(data, _conversion_memo)
    except NotPlain:
        read = None
    if read is None:
        return _read_staged_with_pydicom(data)
    dataset, structure = read.dataset, read.read.structure
    dataset.file_meta = read.file_meta
    image_heads = [element.head for element in read.read.elements
                   if element.tag in IMAGE_DATA_TAGS]
    native_pixels = None
    spans: list[ValueSpan] = []
    raw_values: dict[int, bytes | None] = {}
    for root, elements in ((read.file_meta, read.read.meta), (dataset, read.read.elements)):
        _reader_spans(root, elements, (), spans)
    for element in read.read.elements:
        raw_values[element.tag] = data[element.start:element.end]
        if element.tag == PIXEL_DATA and element.length != UNDEFINED_LENGTH:
            native_pixels = (element.start, element.end)
    return StagedRead(dataset, structure.image_end, "", min(image_heads, default=None),
                      raw_values, sorted(spans, key=_span_start), native_pixels)


def _reader_spans(root: Dataset, elements: list[Element], path: tuple[tuple[int, int], ...],
                  spans: list["ValueSpan"]) -> None:
    for element in elements:
        if element.items is None:
            spans.append(ValueSpan(element.start, element.end, root, path, element.tag))
            continue
        for number, item in enumerate(element.items, start=1):
            _reader_spans(root, item, (*path, (element.tag, number)), spans)


def _read_staged_with_pydicom(data: bytes) -> StagedRead:
    """Parse a staged file whole with pydicom, converting every element; if its end cannot be
    read (trailing bytes, a damaged element), fall back to the header before the pixel data."""
    pixel_end = None
    try:
        dataset = dcmread(io.BytesIO(data))
        # From the raw elements, before conversion.
        pixel_start, pixel_end = _image_data_span(dataset)
        raw_values = _raw_values(dataset)
        spans = (_value_spans(dataset.file_meta, dataset.file_meta, data)
                 + _value_spans(dataset, dataset, data))
        pixel_data = dataset.get_item(PIXEL_DATA) if PIXEL_DATA in dataset else None
        native_pixels = None
        if (isinstance(pixel_data, RawDataElement) and pixel_data.value is not None
                and pixel_data.length != UNDEFINED_LENGTH):
            native_pixels = (pixel_data.value_tell, pixel_data.value_tell + pixel_data.length)
        for _element in dataset.iterall():  # pydicom converts values lazily: force it
            pass
        return StagedRead(dataset, pixel_end, "", pixel_start, raw_values, sorted(
            spans, key=_span_start), native_pixels)
    except READ_ERRORS as error:
        problem = f"the file cannot be read to its end ({type(error).__name__})"
    try:
        header = dcmread(io.BytesIO(data), stop_before_pixels=True)
        raw_values = _raw_values(header)
        spans = (_value_spans(header.file_meta, header.file_meta, data)
                 + _value_spans(header, header, data))
        for _element in header.iterall():
            pass
        return StagedRead(header, pixel_end, problem, raw_values=raw_values,
                          spans=sorted(spans, key=_span_start))
    except READ_ERRORS as error:
        return StagedRead(None, pixel_end,
                          f"the file cannot be read as DICOM ({type(error).__name__})")


def _span_start(span: ValueSpan) -> int:
    return span.start


def _value_spans(root: Dataset, dataset: Dataset, data: bytes, base: int = 0,
                 path: tuple[tuple[int, int], ...] = ()) -> list[ValueSpan]:
    """Value spans of every element not yet converted, at any depth (converting sequences).

    pydicom gives each raw element the offset of its value in the stream it was read from:
    the file for top-level elements and undefined-length sequences, the sequence's own value
    for items of a defined-length sequence. A span is kept only where the file's bytes there
    are the element's value, so a wrong guess can never attribute a hit to the wrong place.
    """
    spans = []
    for stored in sorted(dataset.values(), key=_tag_of):
        tag = int(stored.tag)
        if isinstance(stored, RawDataElement):
            start = base + stored.value_tell
            value = stored.value
            is_sequence = stored.VR == "SQ" or (stored.VR is None and dataset[tag].VR == "SQ")
            if is_sequence:
                child_base = start if stored.length != UNDEFINED_LENGTH else base
            elif value is not None and data[start:start + len(value)] == value:
                spans.append(ValueSpan(start, start + len(value), root, path, tag))
                continue
            else:
                continue
        elif stored.VR == "SQ":
            child_base = base  # read from the same stream as its parent
        else:
            continue
        element = dataset[tag]
        if element.VR != "SQ":
            continue
        for number, item in enumerate(element.value or [], start=1):
            spans += _value_spans(root, item, data, child_base, (*path, (tag, number)))
    return spans


def _tag_of(element: DataElement | RawDataElement) -> int:
    return int(element.tag)


def read_source(path: Path) -> Dataset | None:
    """The whole source file (pixel data too), or None if it cannot be read."""
    try:
        # force: old exports without the 128-byte preamble and file header are staged too.
        dataset = dcmread(path, force=True)
        return dataset if "SOPInstanceUID" in dataset else None
    except READ_ERRORS:
        return None  # staging already listed this file as an error


def read_source_header(path: Path) -> tuple[Dataset | None, int]:
    """The source's elements before the image data, and the byte offset where the image data
    starts (the file's size if it has none). (None, 0) if it cannot be read. Read with the
    project's reader; a file it does not stand for exactly is read by pydicom."""
    try:
        with open(path, "rb") as handle, mapped(handle) as data:
            read = read_file(data, whole=False)  # left unconverted: few values are looked at
    except (NotPlain, OSError):
        read = None
    if read is not None:
        dataset = read.dataset
        dataset.file_meta = read.file_meta
        return ((dataset if SOP_INSTANCE_UID in dataset else None),
                read.read.structure.image_offset)
    try:
        with open(path, "rb") as handle:
            dataset = dcmread(handle, stop_before_pixels=True, force=True)
            return (dataset if "SOPInstanceUID" in dataset else None), handle.tell()
    except READ_ERRORS:
        return None, 0  # staging already listed this file as an error


def _raw_values(dataset: Dataset) -> dict[int, bytes | None]:
    """Top-level value bytes of the elements pydicom has not converted yet."""
    return {int(raw.tag): raw.value for raw in dataset.values()
            if isinstance(raw, RawDataElement)}


def _image_data_span(dataset: Dataset) -> tuple[int | None, int | None]:
    """(byte offset of the first image data element, byte offset just after the pixel data),
    each None when unknown; read from the raw elements, before conversion."""
    starts = []
    for tag in IMAGE_DATA_TAGS:
        raw = dataset.get_item(tag) if tag in dataset else None
        if isinstance(raw, RawDataElement):
            # Image data VRs (OB, OW, OF, OD) have a 12-byte head in explicit VR, 8 in implicit.
            starts.append(raw.value_tell - (8 if raw.is_implicit_VR else 12))
    pixel_data = dataset.get_item(PIXEL_DATA) if PIXEL_DATA in dataset else None
    end = None
    if isinstance(pixel_data, RawDataElement) and pixel_data.value is not None:
        end = pixel_data.value_tell + (  # encapsulated: items, then an 8-byte delimiter
            len(pixel_data.value) + 8 if pixel_data.length == UNDEFINED_LENGTH
            else pixel_data.length)
    return min(starts, default=None), end


@dataclass
class SourceHeader:
    """A source file's elements before its image data, and where its image data starts."""

    path: Path
    dataset: Dataset | None
    image_start: int


def frame_count(dataset: Dataset) -> int:
    try:
        return int(dataset.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        return 1
