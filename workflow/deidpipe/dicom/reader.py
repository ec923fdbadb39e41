"""The project's one byte-level DICOM reader: how a file is laid out (preamble, file meta,
transfer syntax) and a walk over every element by tag and length, on the file's bytes mapped
into memory. Staging uses the walk to refuse damaged files before the engine sees them;
verification uses it to find every element's value bytes and place without parsing the file
with pydicom. pydicom's dictionary gives VRs where the file does not (implicit VR, UN); the
reader is independent of fw-file-rs, the engine that verification checks.

Errors (``Unstageable``) describe what is wrong in words and never quote a value.
"""

import mmap
import os
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache, lru_cache
from types import ModuleType
from typing import BinaryIO, NoReturn

UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
COPY_CHUNK = 1 << 20

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
# Transfer syntaxes whose whole data set is deflated, and the syntax of the inflated data set.
INFLATED_SYNTAX = {DEFLATED_LE: EXPLICIT_LE, "1.2.840.10008.1.2.4.95": "1.2.840.10008.1.2.4.94",
                   "1.2.840.10008.1.2.4.205": "1.2.840.10008.1.2.4.204"}
NATIVE_SYNTAXES = {IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE}
VRS = frozenset(vr.encode() for vr in (
    "AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN "
    "UR US UT UV").split())
LONG_VRS = frozenset(vr.encode() for vr in "OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
VALUE_SIZE = {b"UL": 4, b"SL": 4, b"FL": 4, b"US": 2, b"SS": 2, b"FD": 8, b"AT": 4, b"SV": 8,
              b"UV": 8}
PIXEL_DATA = 0x7FE00010
FLOAT_PIXEL_DATA, DOUBLE_FLOAT_PIXEL_DATA = 0x7FE00008, 0x7FE00009
FIRST_IMAGE_DATA_TAG = FLOAT_PIXEL_DATA  # the lowest of them
# The image data elements, pixel data first (reports list them in this order); the engine
# stops at the first of them.
IMAGE_DATA_TAGS = (PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_FLOAT_PIXEL_DATA)
SOP_INSTANCE_UID = 0x00080018
PREAMBLE_BYTES = 128
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED_LENGTH = 0xFFFFFFFF
PREAMBLE = b"\0" * 128 + b"DICM"
MAX_META_VALUE = 1 << 16
MAX_DEPTH = 64

# A file's bytes: mapped into memory (mmap) or, for an empty file, b"".
Buffer = bytes | mmap.mmap

RECOPY_ADVICE = "copy it again from the scanner or PACS export"


class Unstageable(Exception):
    """A file that cannot be staged. The message is for a research coordinator: it names what
    is wrong in words, and never holds a DICOM value (values can identify the patient)."""


@dataclass
class Container:
    """Where a file's data set starts and how it is encoded."""

    dataset_offset: int
    transfer_syntax: str  # as the file meta says, or as guessed when there is no file meta
    meta: dict[int, tuple[bytes, bytes]]  # file meta elements: tag -> (VR, value)
    standard: bool  # preamble, 'DICM', complete file meta: the engine reads the file as it is
    guessed: bool = False  # no file meta: the encoding was found from the first element


# pydicom (its data dictionary and UID table) is imported when first needed: importing it takes
# about a fifth of a second, a fixed cost of every stage job, and files in explicit VR with a
# native transfer syntax (most scanner output) never need it.
@cache
def _pydicom_datadict() -> ModuleType:
    from pydicom import datadict

    return datadict


@cache
def pydicom_uid() -> ModuleType:
    from pydicom import uid

    return uid


def transfer_syntax_name(transfer_syntax: str) -> str:
    """The standard's name of a transfer syntax ('' if it is not a standard one)."""
    uid = pydicom_uid().UID(transfer_syntax)
    return str(uid.name) if uid.is_transfer_syntax else ""


def _element_name(tag: int | None) -> str:
    """' PatientName (0010,0010)' for a tag of the DICOM dictionary, else ''. In a damaged file
    the 'tag' may be four bytes of a value (part of a name, say): those are never shown."""
    if tag is None or not _pydicom_datadict().dictionary_has_tag(tag):
        return ""
    return f" {_pydicom_datadict().keyword_for_tag(tag)} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


@lru_cache(maxsize=8192)
def dictionary_vr(tag: int) -> str:
    """The VR the DICOM dictionary gives a tag ('' if unknown): readers use it where the file
    does not say (implicit VR) or says UN."""
    try:
        return _pydicom_datadict().dictionary_VR(tag)
    except KeyError:
        return ""


def _is_sequence(tag: int) -> bool:
    return dictionary_vr(tag) == "SQ"


def _read_meta(data: Buffer, offset: int) -> tuple[dict[int, tuple[bytes, bytes]], int]:
    """The file meta elements (group 0002, explicit VR little endian) from ``offset``."""
    meta: dict[int, tuple[bytes, bytes]] = {}
    size = len(data)
    while True:
        head = data[offset:offset + 8]
        if len(head) < 8 or struct.unpack("<H", head[:2])[0] != 0x0002:
            return meta, offset
        tag = (0x0002 << 16) | struct.unpack("<H", head[2:4])[0]
        vr = head[4:6]
        if vr not in VRS:
            if offset == 0:  # no preamble, and the first bytes are not a file meta element
                return meta, offset
            raise Unstageable("its DICOM file header (file meta information) is damaged; "
                              + RECOPY_ADVICE)
        if vr in LONG_VRS:
            more = data[offset + 8:offset + 12]
            length = struct.unpack("<I", more)[0] if len(more) == 4 else UNDEFINED_LENGTH
            start = offset + 12
        else:
            length, start = struct.unpack("<H", head[6:8])[0], offset + 8
        if length > MAX_META_VALUE or start + length > size:
            raise Unstageable("its DICOM file header (file meta information) is damaged or cut "
                              "short; " + RECOPY_ADVICE)
        if length % VALUE_SIZE.get(vr, 1) or (vr == b"UI" and length > 64) or (
                tag == 0x00020000 and (vr, length) != (b"UL", 4)):
            raise Unstageable("its DICOM file header (file meta information) is damaged; "
                              + RECOPY_ADVICE)
        meta[tag] = (vr, data[start:start + length])
        offset = start + length


def _guess_encoding(first: bytes) -> str | None:
    """The encoding of a data set without file meta, from its first element (old PACS exports
    write the data set alone). None: it does not start like a DICOM data set."""
    if len(first) < 8:
        return None

    def plausible(group: int) -> bool:  # a data set starts with group 0008 (or a few before it)
        return 0x0004 <= group <= 0x0010 and group % 2 == 0

    group_le, group_be = struct.unpack("<H", first[:2])[0], struct.unpack(">H", first[:2])[0]
    if first[4:6] in VRS:
        if plausible(group_le):
            return EXPLICIT_LE
        if plausible(group_be):
            return EXPLICIT_BE
        return None
    return IMPLICIT_LE if plausible(group_le) else None


def read_container(data: Buffer) -> Container | None:
    """How the file is laid out; None when it is not DICOM at all."""
    has_preamble = data[128:132] == b"DICM"
    meta, dataset_offset = _read_meta(data, 132 if has_preamble else 0)
    transfer_syntax = meta.get(0x00020010, (b"", b""))[1].rstrip(b"\0 ").decode("latin-1")
    if transfer_syntax:
        if not UID_PATTERN.match(transfer_syntax):
            raise Unstageable("its DICOM file header names no valid encoding (transfer syntax); "
                              "the file is damaged; " + RECOPY_ADVICE)
        if (transfer_syntax not in NATIVE_SYNTAXES and transfer_syntax not in INFLATED_SYNTAX
                and not transfer_syntax_name(transfer_syntax)):
            raise Unstageable("its DICOM file header names an encoding (transfer syntax) that is "
                              "not a standard DICOM one; Flywheel's de-identification engine "
                              "cannot read it")
        group_length = meta.get(0x00020000, (b"", b""))[1]
        standard = (has_preamble and len(group_length) == 4
                    and struct.unpack("<I", group_length)[0] == dataset_offset - 144
                    and transfer_syntax not in INFLATED_SYNTAX)
        return Container(dataset_offset, transfer_syntax, meta, standard)
    guessed = _guess_encoding(data[dataset_offset:dataset_offset + 8])
    if guessed is None:
        if has_preamble or meta:
            raise Unstageable("starts like a DICOM file but its data cannot be read; the file is "
                              "damaged; " + RECOPY_ADVICE)
        return None
    return Container(dataset_offset, guessed, meta, standard=False, guessed=True)


@dataclass
class Structure:
    """What a walk over every element found."""

    image_offset: int  # where the pixel data starts (the engine's header ends there), or the end
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    image_end: int | None = None  # just after the pixel data, when the walk went past it


@dataclass(slots=True)
class Element:
    """One element as stored: its tag, the VR the file writes ('' in implicit VR), the length
    its head gives, where its head starts and its value lies (``start:end``; for compressed
    pixel data, the fragments without the closing delimiter), and for a sequence its items."""

    tag: int
    vr: str
    length: int
    head: int
    start: int
    end: int
    items: list[list["Element"]] | None = None


# Element heads: (group, element, 4-byte length) for implicit VR and items; (group, element,
# VR, 2-byte length) for explicit VR.
IMPLICIT_HEAD = {True: struct.Struct("<HHI"), False: struct.Struct(">HHI")}
EXPLICIT_HEAD = {True: struct.Struct("<HH2sH"), False: struct.Struct(">HH2sH")}
LONG_LENGTH = {True: struct.Struct("<I"), False: struct.Struct(">I")}
ZEROS = b"\0" * 8


def _fits_its_type(tag: int, vr: bytes, length: int) -> bool:
    """A number-valued element's length is a multiple of its value size (readers refuse it
    otherwise). 'US or SS' and the like have one size."""
    size = VALUE_SIZE.get(vr) if vr and vr != b"UN" else _dictionary_value_size(tag)
    return size is None or length % size == 0


@lru_cache(maxsize=8192)
def _dictionary_value_size(tag: int) -> int | None:
    """The value size of a tag's VR in the dictionary (None: text or bytes, or VRs of
    different sizes)."""
    sizes = {VALUE_SIZE.get(option.strip().encode(), 1)
             for option in dictionary_vr(tag).split(" or ")}
    return sizes.pop() if len(sizes) == 1 and 1 not in sizes else None


class _Walker:
    """Walks every element of a data set by its tags and lengths (values are skipped, but for
    the SOP class and instance UIDs), so that a file cut short or with a damaged element is
    found before it is staged. Works on the file's bytes mapped into memory: no read calls."""

    def __init__(self, data: Buffer, transfer_syntax: str, guessed: bool,
                 whole: bool = False) -> None:
        self.data, self.size, self.guessed = data, len(data), guessed
        # whole: go on past the image data to the end of the file (verification reads what
        # follows it; staging copies it as it is).
        self.whole = whole
        self.implicit = transfer_syntax == IMPLICIT_LE
        self.little = transfer_syntax != EXPLICIT_BE
        self.encapsulated = transfer_syntax not in NATIVE_SYNTAXES
        self.in_pixel_data = False

    def cut_short(self, tag: int | None, wanted: int = 0, present: int = 0) -> NoReturn:
        if self.in_pixel_data or tag in IMAGE_DATA_TAGS:
            detail = (f" ({present} of {wanted} bytes are there)"
                      if wanted and wanted != UNDEFINED_LENGTH else "")
            raise Unstageable(f"is incomplete: it ends inside the image data{detail}; the copy "
                              "was probably cut short; " + RECOPY_ADVICE)
        name = _element_name(tag)
        where = f" (at element{name})" if name else ""
        raise Unstageable(f"is incomplete or damaged: its header runs past the end of the "
                          f"file{where}, before the image data; the copy was probably cut short "
                          "or damaged; " + RECOPY_ADVICE)

    def damaged(self, what: str) -> NoReturn:
        raise Unstageable(f"is damaged: {what}; " + RECOPY_ADVICE)

    def element(self, offset: int, implicit: bool, little: bool) -> tuple[int, bytes, int, int]:
        """(tag, VR, value length, value offset) of the element at ``offset``."""
        if offset + 8 > self.size:
            self.cut_short(None)
        if implicit:
            group, number, length = IMPLICIT_HEAD[little].unpack_from(self.data, offset)
            return (group << 16) | number, b"", length, offset + 8
        group, number, vr, length = EXPLICIT_HEAD[little].unpack_from(self.data, offset)
        tag = (group << 16) | number
        if group == 0xFFFE:
            return tag, b"", IMPLICIT_HEAD[little].unpack_from(self.data, offset)[2], offset + 8
        if vr not in VRS:
            self.damaged(f"an element{_element_name(tag)} has no valid value representation")
        if vr in LONG_VRS:
            if offset + 12 > self.size:
                self.cut_short(tag)
            return tag, vr, LONG_LENGTH[little].unpack_from(self.data, offset + 8)[0], offset + 12
        return tag, vr, length, offset + 8

    def dataset(self, offset: int, end: int | None, implicit: bool, little: bool, depth: int,
                found: Structure | None = None, into: list[Element] | None = None) -> int:
        """Walk elements from ``offset`` to ``end`` (None: to an item delimiter); return the
        offset after them. ``found`` is the top level's record; ``into`` collects the elements
        (None: the walk only checks them)."""
        if depth > MAX_DEPTH:
            self.damaged("its sequences are nested too deep to be real")
        while end is None or offset < end:
            if found is not None and (offset == self.size or (
                    self._may_be_padding(offset)
                    and self.data[offset:offset + 8] == ZEROS[:self.size - offset]
                    and self._only_padding_from(offset))):
                if self.whole and offset != self.size:
                    self.damaged("it ends in padding")  # a reader of its own must judge it
                return offset
            head = offset
            tag, vr, length, value = self.element(offset, implicit, little)
            items: list[list[Element]] | None = None if into is None else []
            value_end = -1
            if tag == ITEM_END and end is None:
                return value
            if tag >> 16 == 0xFFFE:
                self.damaged("a sequence delimiter is out of place")
            if found is not None and tag in IMAGE_DATA_TAGS and found.image_offset < 0:
                found.image_offset = offset
                self.in_pixel_data = True
            if length == UNDEFINED_LENGTH:
                if tag == PIXEL_DATA and (implicit or vr in (b"OB", b"OW")):
                    if self.guessed:
                        raise Unstageable(
                            "has no DICOM file header (an old export format) and compressed "
                            "image data, so how the image is compressed cannot be known; export "
                            "it again as a standard DICOM file")
                    if not self.encapsulated:
                        self.damaged("its image data is compressed but its header says "
                                     "uncompressed")
                    offset = self.fragments(value)
                    value_end, items = offset - 8, None
                elif implicit or vr == b"SQ":
                    offset = self.sequence(value, None, implicit, little, depth, items)
                elif vr == b"UN":  # a sequence of unknown type: implicit VR little endian
                    offset = self.sequence(value, None, True, True, depth, items)
                else:
                    self.damaged(f"an element{_element_name(tag)} has no length")
            else:
                if value + length > self.size:
                    self.cut_short(tag, length, self.size - value)
                if end is not None and value + length > end:
                    self.damaged(f"an element{_element_name(tag)} is longer than the item "
                                 "holding it")
                if not _fits_its_type(tag, vr, length):
                    self.damaged(f"an element{_element_name(tag)} has a length that does not "
                                 "fit its type")
                if vr == b"SQ" or (implicit and _is_sequence(tag)):
                    self.sequence(value, value + length, implicit, little, depth, items)
                elif vr == b"UN" and _is_sequence(tag):  # read as implicit VR little endian
                    self.sequence(value, value + length, True, True, depth, items)
                else:
                    items = None
                    if found is not None and tag in (0x00080016, 0x00080018) and length <= 64:
                        uid = self.data[value:value + length].rstrip(b"\0 ").decode("latin-1")
                        if tag == 0x00080016:
                            found.sop_class_uid = uid
                        else:
                            found.sop_instance_uid = uid
                offset = value + length
            if into is not None:
                into.append(Element(tag, vr.decode(), length, head, value,
                                    offset if value_end < 0 else value_end, items))
            if found is not None and self.in_pixel_data:
                self.in_pixel_data = False
                found.image_end = offset
                if not self.whole:
                    # What follows the image data is copied as it is (as Flywheel stores it);
                    # verification reads it and searches its bytes for identifiers.
                    return self.size
        if offset != end:
            self.damaged("an item is shorter than its elements")
        return offset

    def sequence(self, offset: int, end: int | None, implicit: bool, little: bool,
                 depth: int, items: list[list[Element]] | None = None) -> int:
        while end is None or offset < end:
            tag, _vr, length, value = self.element(offset, True, little)
            if tag == SEQUENCE_END and end is None:
                return value
            if tag != ITEM:
                self.damaged("a sequence holds something else where an item should be")
            item: list[Element] | None = None
            if items is not None:
                item = []
                items.append(item)
            if length == UNDEFINED_LENGTH:
                offset = self.dataset(value, None, implicit, little, depth + 1, into=item)
            else:
                if value + length > self.size:
                    self.cut_short(None, length, self.size - value)
                offset = self.dataset(value, value + length, implicit, little, depth + 1,
                                      into=item)
        if offset != end:
            self.damaged("a sequence is shorter than its items")
        return offset

    def fragments(self, offset: int) -> int:
        """Encapsulated (compressed) pixel data: items of known length, then a delimiter."""
        while True:
            tag, _vr, length, value = self.element(offset, True, True)
            if tag == SEQUENCE_END:
                return value
            if tag != ITEM or length == UNDEFINED_LENGTH:
                self.damaged("its compressed image data is not a list of fragments")
            if value + length > self.size:
                self.cut_short(PIXEL_DATA, length, self.size - value)
            offset = value + length

    def _may_be_padding(self, offset: int) -> bool:
        """Two zero bytes (or one at the end): a cheap first test (no slice) for padding."""
        return self.data[offset] == 0 and (offset + 1 == self.size or self.data[offset + 1] == 0)

    def _only_padding_from(self, offset: int) -> bool:
        """Zero bytes to the end (some exports pad files to a block size)."""
        for start in range(offset, self.size, COPY_CHUNK):
            chunk = self.data[start:min(start + COPY_CHUNK, self.size)]
            if chunk.count(0) != len(chunk):
                return False
        return True


def walk_structure(data: Buffer, container: Container, offset: int) -> Structure:
    """Check every element of the data set starting at ``offset``, up to its image data."""
    found = Structure(image_offset=-1)
    walker = _Walker(data, container.transfer_syntax, container.guessed)
    walker.dataset(offset, None, walker.implicit, walker.little, 0, found)
    if found.image_offset < 0:
        found.image_offset = walker.size
    return found


@dataclass
class ReadElements:
    """Every element of a file: the file meta's and the data set's, each in file order."""

    container: Container
    structure: Structure
    meta: list[Element] = field(default_factory=list)
    elements: list[Element] = field(default_factory=list)

    @property
    def implicit(self) -> bool:
        return self.container.transfer_syntax == IMPLICIT_LE

    @property
    def little(self) -> bool:
        return self.container.transfer_syntax != EXPLICIT_BE


def read_elements(data: Buffer, whole: bool = True) -> ReadElements | None:
    """Every element of the file at any depth, its head and value places, the file meta's
    too, and (``whole``) the elements after the image data; None when the file is not DICOM.
    Raises Unstageable on anything damaged or unusual. A deflated data set is not read."""
    container = read_container(data)
    if container is None:
        return None
    if container.transfer_syntax in INFLATED_SYNTAX:
        raise Unstageable("its data set is compressed as a whole (deflated)")
    read = ReadElements(container, Structure(image_offset=-1))
    meta_start = 132 if data[128:132] == b"DICM" else 0
    if container.meta:
        _Walker(data, EXPLICIT_LE, False).dataset(meta_start, container.dataset_offset, False,
                                                  True, 0, into=read.meta)
    walker = _Walker(data, container.transfer_syntax, container.guessed, whole)
    walker.dataset(container.dataset_offset, None, walker.implicit, walker.little, 0,
                   read.structure, read.elements)
    if read.structure.image_offset < 0:
        read.structure.image_offset = walker.size
    return read



@contextmanager
def mapped(handle: BinaryIO) -> Iterator[Buffer]:
    """The file's bytes, mapped into memory (read only); b'' for an empty file."""
    if os.fstat(handle.fileno()).st_size == 0:
        yield b""
        return
    with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        yield data

