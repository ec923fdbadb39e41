"""Reading staged and source files for verification: the project's reader where it stands for the
file exactly, pydicom otherwise; either way the checks get a FileView (deidpipe.verification.view).
"""

import io
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError

from deidpipe.dicom.datasets import NotPlain
from deidpipe.dicom.reader import (
    IMAGE_DATA_TAGS,
    PIXEL_DATA,
    SOP_INSTANCE_UID,
    UNDEFINED_LENGTH,
    Unstageable,
    mapped,
    read_elements,
)
from deidpipe.verification.view import (
    DatasetView,
    FileView,
    RecordView,
    SpanPlace,
    Unreadable,
)

NUMBER_OF_FRAMES = 0x00280008

# ---- reading DICOM ---------------------------------------------------------------------------

# What pydicom raises on damaged data (OSError: 'No tag to read at file position ...').
READ_ERRORS = (InvalidDicomError, BytesLengthException, ValueError, EOFError,
               NotImplementedError, KeyError, TypeError, AttributeError, OSError)


def read_staged(data: bytes) -> FileView:
    """Every element of a staged file, read with the project's reader; a file that reader
    does not stand for exactly (damaged, unusual) is read by pydicom instead."""
    try:
        read = read_elements(data)
        if read is not None:
            view = RecordView(data, read, whole=True)
            view.leaves()  # converts every element: NotPlain here hands the file to pydicom
            return view
    except (Unstageable, NotPlain, *READ_ERRORS):
        pass
    return _read_staged_with_pydicom(data)


def _read_staged_with_pydicom(data: bytes) -> FileView:
    """Parse a staged file whole with pydicom, converting every element; if its end cannot be
    read (trailing bytes, a damaged element), fall back to the header before the pixel data."""
    pixel_end = None
    try:
        dataset = dcmread(io.BytesIO(data))
        # From the raw elements, before conversion.
        pixel_start, pixel_end = _image_data_span(dataset)
        raw_values = _raw_values(dataset)
        spans = (_value_spans(dataset.file_meta, data, True) + _value_spans(dataset, data, False))
        pixel_data = dataset.get_item(PIXEL_DATA) if PIXEL_DATA in dataset else None
        native_pixels = None
        if (isinstance(pixel_data, RawDataElement) and pixel_data.value is not None
                and pixel_data.length != UNDEFINED_LENGTH):
            native_pixels = (pixel_data.value_tell, pixel_data.value_tell + pixel_data.length)
        view = DatasetView(dataset, "", raw_values, spans, pixel_start, pixel_end,
                           native_pixels)
        view.leaves()  # pydicom converts values lazily: force it here
        return view
    except READ_ERRORS as error:
        problem = f"the file cannot be read to its end ({type(error).__name__})"
    try:
        header = dcmread(io.BytesIO(data), stop_before_pixels=True)
        raw_values = _raw_values(header)
        spans = (_value_spans(header.file_meta, data, True) + _value_spans(header, data, False))
        view = DatasetView(header, problem, raw_values, spans, image_end=pixel_end)
        view.leaves()
        return view
    except READ_ERRORS as error:
        return Unreadable(f"the file cannot be read as DICOM ({type(error).__name__})",
                          pixel_end)


def _value_spans(dataset: Dataset, data: bytes, in_meta: bool, base: int = 0,
                 path: tuple[tuple[int, int], ...] = ()) -> list[SpanPlace]:
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
                spans.append((start, start + len(value), in_meta, path, tag))
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
            spans += _value_spans(item, data, in_meta, child_base, (*path, (tag, number)))
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


def read_source_header(path: Path) -> tuple[FileView | None, int]:
    """The source's elements before the image data, and the byte offset where the image data
    starts (the file's size if it has none). (None, 0) if it cannot be read. Read with the
    project's reader; a file it does not stand for exactly is read by pydicom."""
    try:
        with open(path, "rb") as handle, mapped(handle) as data:
            read = read_elements(data, whole=False)
            if read is not None:
                # The view outlives the mapping: it reads from a copy of the header's bytes.
                header = data[:read.structure.image_offset]
                view = RecordView(header, read, whole=False)
                return ((view if SOP_INSTANCE_UID in view else None),
                        read.structure.image_offset)
    except (Unstageable, NotPlain, OSError):
        pass  # pydicom reads it
    try:
        with open(path, "rb") as handle:
            dataset = dcmread(handle, stop_before_pixels=True, force=True)
            raw_values = _raw_values(dataset)
            return ((DatasetView(dataset, "", raw_values) if "SOPInstanceUID" in dataset
                     else None), handle.tell())
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
    view: FileView | None
    image_start: int


def frame_count(view: FileView) -> int:
    try:
        element = view.get(NUMBER_OF_FRAMES)
        return int((element.value if element is not None else None) or 1)
    except (TypeError, ValueError):
        return 1
