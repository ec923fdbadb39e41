"""Stage one session: apply the profile with Flywheel's engine and write the de-identified copy.

The staged tree is what ``fw import --output-folder`` writes below the session: one folder per
acquisition, files named ``{SOPInstanceUID}.{Modality}.dcm``. Staging writes into a temporary
sibling folder and renames it into place, so an interrupted run never leaves a staged session
that looks finished. The source files are only ever opened for reading.

Before the engine sees a file, every element of it is walked by tag and length, so that a file
cut short or damaged is listed as an error instead of being staged broken. fw-file-rs reads only
standard files (preamble, 'DICM', complete file meta, a data set that is not deflated): a file
without that header (old PACS exports write the data set alone) or with a deflated data set is
given a standard copy in the work folder, same data set bytes (inflated), which the engine then
reads; the manifest notes it. Error messages describe what is wrong in words and never quote a
value: fw-file-rs's own messages can (a damaged transfer syntax swallows the elements after it).
"""

import hashlib
import mmap
import os
import re
import shutil
import struct
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO, NoReturn

from fw_file_rs.dcm import Context

from deidpipe.files import (
    OWNER_ONLY_FILE,
    make_private_dir,
    sha256_file,
    write_json,
)
from deidpipe.parallel import map_in_workers
from deidpipe.profile import load_profile

# Tags the engine must report for naming (parse_header returns only included tags plus its
# defaults; see the fw-file-rs 0.9.1 note in the README).
NAMING_TAGS = ["SOPInstanceUID", "Modality", "SeriesInstanceUID", "SeriesNumber",
               "SeriesDescription"]
DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}
UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
UNSAFE_IN_NAME = re.compile(r"[\x00-\x1f/\\]")
COPY_CHUNK = 1 << 20


@dataclass
class FileOutcome:
    """What happened to one source file."""

    source: str
    kind: str  # "staged", "skipped" or "error"
    detail: str = ""
    staged: str = ""
    sop_instance_uid: str = ""
    acquisition_uid: str = ""
    sha256: str = ""
    size: int = 0


def engine_version() -> str:
    return f"fw-file-rs {version('fw-file-rs')}"


def make_engine(profile_text: str) -> Context:
    return Context().deid_profile(profile_text).include_tags(NAMING_TAGS)


def list_source_files(dicom_dir: Path) -> tuple[list[Path], list[FileOutcome]]:
    """Every regular file below ``dicom_dir`` (sorted), and the entries that are not followed."""
    files: list[Path] = []
    not_followed: list[FileOutcome] = []
    for folder, subfolders, names in os.walk(dicom_dir, followlinks=False):
        subfolders.sort()
        for name in sorted(names + [sub for sub in subfolders
                                    if os.path.islink(os.path.join(folder, sub))]):
            path = Path(folder, name)
            relative = path.relative_to(dicom_dir).as_posix()
            if path.is_symlink():
                not_followed.append(FileOutcome(relative, "skipped",
                                                "symbolic link (links are not followed)"))
            elif path.is_file():
                files.append(path)
            else:
                not_followed.append(FileOutcome(relative, "skipped", "not a regular file"))
    return files, not_followed


def acquisition_folder_name(label: str) -> str:
    """A folder name for an acquisition label: same text, minus what a path cannot hold."""
    name = UNSAFE_IN_NAME.sub("_", label).strip()
    return name if name not in ("", ".", "..") else "acquisition"


# ---- what a file is: its container (preamble, file meta, encoding) and its element structure ----

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
IMAGE_DATA_TAGS = frozenset({PIXEL_DATA, 0x7FE00008, 0x7FE00009})  # where the engine stops
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED_LENGTH = 0xFFFFFFFF
PREAMBLE = b"\0" * 128 + b"DICM"
MAX_META_VALUE = 1 << 16
MAX_DEPTH = 64
MAX_INFLATED = 4 << 30

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
def _pydicom_uid() -> ModuleType:
    from pydicom import uid

    return uid


def _transfer_syntax_name(transfer_syntax: str) -> str:
    """The standard's name of a transfer syntax ('' if it is not a standard one)."""
    uid = _pydicom_uid().UID(transfer_syntax)
    return str(uid.name) if uid.is_transfer_syntax else ""


def _element_name(tag: int | None) -> str:
    """' PatientName (0010,0010)' for a tag of the DICOM dictionary, else ''. In a damaged file
    the 'tag' may be four bytes of a value (part of a name, say): those are never shown."""
    if tag is None or not _pydicom_datadict().dictionary_has_tag(tag):
        return ""
    return f" {_pydicom_datadict().keyword_for_tag(tag)} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


@lru_cache(maxsize=8192)
def _dictionary_vr(tag: int) -> str:
    """The VR the DICOM dictionary gives a tag ('' if unknown): readers use it where the file
    does not say (implicit VR) or says UN."""
    try:
        return _pydicom_datadict().dictionary_VR(tag)
    except KeyError:
        return ""


def _is_sequence(tag: int) -> bool:
    return _dictionary_vr(tag) == "SQ"


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
                and not _transfer_syntax_name(transfer_syntax)):
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


# Element heads: (group, element, 4-byte length) for implicit VR and items; (group, element,
# VR, 2-byte length) for explicit VR.
IMPLICIT_HEAD = {True: struct.Struct("<HHI"), False: struct.Struct(">HHI")}
EXPLICIT_HEAD = {True: struct.Struct("<HH2sH"), False: struct.Struct(">HH2sH")}
LONG_LENGTH = {True: struct.Struct("<I"), False: struct.Struct(">I")}
ZEROS = b"\0" * 8


@lru_cache(maxsize=8192)
def _fits_its_type(tag: int, vr: bytes, length: int) -> bool:
    """A number-valued element's length is a multiple of its value size (readers refuse it
    otherwise). 'US or SS' and the like have one size."""
    name = vr.decode() if vr and vr != b"UN" else _dictionary_vr(tag)
    sizes = {VALUE_SIZE.get(option.strip().encode(), 1) for option in name.split(" or ")}
    return len(sizes) != 1 or length % sizes.pop() == 0


class _Walker:
    """Walks every element of a data set by its tags and lengths (values are skipped, but for
    the SOP class and instance UIDs), so that a file cut short or with a damaged element is
    found before it is staged. Works on the file's bytes mapped into memory: no read calls."""

    def __init__(self, data: Buffer, transfer_syntax: str, guessed: bool) -> None:
        self.data, self.size, self.guessed = data, len(data), guessed
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
                found: Structure | None = None) -> int:
        """Walk elements from ``offset`` to ``end`` (None: to an item delimiter); return the
        offset after them. ``found`` is the top level's record."""
        if depth > MAX_DEPTH:
            self.damaged("its sequences are nested too deep to be real")
        while end is None or offset < end:
            if found is not None and (offset == self.size or (
                    self.data[offset:offset + 8] == ZEROS[:self.size - offset]
                    and self._only_padding_from(offset))):
                return offset
            tag, vr, length, value = self.element(offset, implicit, little)
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
                elif implicit or vr == b"SQ":
                    offset = self.sequence(value, None, implicit, little, depth)
                elif vr == b"UN":  # a sequence of unknown type: implicit VR little endian
                    offset = self.sequence(value, None, True, True, depth)
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
                    self.sequence(value, value + length, implicit, little, depth)
                elif vr == b"UN" and _is_sequence(tag):  # read as implicit VR little endian
                    self.sequence(value, value + length, True, True, depth)
                elif found is not None and tag in (0x00080016, 0x00080018) and length <= 64:
                    uid = self.data[value:value + length].rstrip(b"\0 ").decode("latin-1")
                    if tag == 0x00080016:
                        found.sop_class_uid = uid
                    else:
                        found.sop_instance_uid = uid
                offset = value + length
            if found is not None and self.in_pixel_data:
                # What follows the image data is copied as it is (as Flywheel stores it);
                # verification reads it and searches its bytes for identifiers.
                self.in_pixel_data = False
                return self.size
        if offset != end:
            self.damaged("an item is shorter than its elements")
        return offset

    def sequence(self, offset: int, end: int | None, implicit: bool, little: bool,
                 depth: int) -> int:
        while end is None or offset < end:
            tag, _vr, length, value = self.element(offset, True, little)
            if tag == SEQUENCE_END and end is None:
                return value
            if tag != ITEM:
                self.damaged("a sequence holds something else where an item should be")
            if length == UNDEFINED_LENGTH:
                offset = self.dataset(value, None, implicit, little, depth + 1)
            else:
                if value + length > self.size:
                    self.cut_short(None, length, self.size - value)
                offset = self.dataset(value, value + length, implicit, little, depth + 1)
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

    def _only_padding_from(self, offset: int) -> bool:
        """Zero bytes to the end (some exports pad files to a block size)."""
        for start in range(offset, self.size, COPY_CHUNK):
            chunk = self.data[start:min(start + COPY_CHUNK, self.size)]
            if chunk.count(0) != len(chunk):
                return False
        return True


def walk_structure(data: Buffer, container: Container, offset: int) -> Structure:
    """Check every element of the data set starting at ``offset``."""
    found = Structure(image_offset=-1)
    walker = _Walker(data, container.transfer_syntax, container.guessed)
    walker.dataset(offset, None, walker.implicit, walker.little, 0, found)
    if found.image_offset < 0:
        found.image_offset = walker.size
    return found


# ---- files without a standard DICOM file header -------------------------------------------

def _meta_element(tag: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0" if vr in (b"UI", b"OB") else b" "
    head = struct.pack("<HH", 0x0002, tag & 0xFFFF) + vr
    if vr in LONG_VRS:
        return head + b"\0\0" + struct.pack("<I", len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def standard_header(container: Container, transfer_syntax: str, structure: Structure) -> bytes:
    """Preamble, 'DICM' and a complete file meta group for a data set that lacks them: the
    file meta the file had (if any), with what the standard requires added."""
    meta = dict(container.meta)
    meta.pop(0x00020000, None)
    meta.setdefault(0x00020001, (b"OB", b"\0\1"))
    if UID_PATTERN.match(structure.sop_class_uid):
        meta.setdefault(0x00020002, (b"UI", structure.sop_class_uid.encode()))
    if UID_PATTERN.match(structure.sop_instance_uid):
        meta.setdefault(0x00020003, (b"UI", structure.sop_instance_uid.encode()))
    meta[0x00020010] = (b"UI", transfer_syntax.encode())
    meta.setdefault(0x00020012, (b"UI", _pydicom_uid().PYDICOM_IMPLEMENTATION_UID.encode()))
    body = b"".join(_meta_element(tag, vr, value) for tag, (vr, value) in sorted(meta.items()))
    return PREAMBLE + _meta_element(0x00020000, b"UL", struct.pack("<I", len(body))) + body


def _inflate(data: Buffer, offset: int, into: BinaryIO) -> int:
    """Inflate a deflated data set (raw deflate from ``offset``) into ``into``; its size."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    size = 0
    try:
        for start in range(offset, len(data), COPY_CHUNK):
            chunk = data[start:start + COPY_CHUNK]
            while chunk:
                inflated = inflater.decompress(chunk, COPY_CHUNK)
                into.write(inflated)
                size += len(inflated)
                if size > MAX_INFLATED:
                    raise Unstageable("is too large once uncompressed to be staged")
                chunk = inflater.unconsumed_tail
        into.write(inflater.flush())
    except zlib.error:
        raise Unstageable("is compressed as a whole (deflated) and its compressed data is "
                          "damaged; " + RECOPY_ADVICE) from None
    if not inflater.eof:
        raise Unstageable("is compressed as a whole (deflated) and is cut short; "
                          + RECOPY_ADVICE)
    return into.tell()


@dataclass
class EngineInput:
    """The file the engine reads (the source, or a standard copy of it in the work folder)."""

    path: Path
    image_offset: int
    note: str = ""


def _copy_from(data: Buffer, start: int, writer: BinaryIO, digest: Any = None) -> int:
    """Write ``data`` from ``start`` to its end in chunks (memory stays bounded for large
    files); feed ``digest`` too. Returns the bytes written."""
    for offset in range(start, len(data), COPY_CHUNK):
        chunk = data[offset:offset + COPY_CHUNK]
        writer.write(chunk)
        if digest is not None:
            digest.update(chunk)
    return max(0, len(data) - start)


@contextmanager
def mapped(handle: BinaryIO) -> Iterator[Buffer]:
    """The file's bytes, mapped into memory (read only); b'' for an empty file."""
    if os.fstat(handle.fileno()).st_size == 0:
        yield b""
        return
    with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        yield data


def prepare_input(source: Path, data: Buffer, container: Container,
                  work_copy: Path) -> EngineInput:
    """Check the file's structure; for a file without a standard DICOM file header write a
    standard copy (same data set bytes) for the engine, which reads only standard files."""
    if container.standard:
        structure = walk_structure(data, container, container.dataset_offset)
        return EngineInput(source, structure.image_offset)
    with tempfile.TemporaryFile(dir=work_copy.parent) as body:
        if container.transfer_syntax in INFLATED_SYNTAX:
            _inflate(data, container.dataset_offset, body)
            transfer_syntax = INFLATED_SYNTAX[container.transfer_syntax]
            note = ("the source is compressed as a whole (deflated transfer syntax); the staged "
                    f"copy holds the same data uncompressed "
                    f"({_transfer_syntax_name(transfer_syntax)})")
        else:
            _copy_from(data, container.dataset_offset, body)
            transfer_syntax = container.transfer_syntax
            note = ("the source has no standard DICOM file header (128-byte preamble, 'DICM', "
                    "complete file meta); the staged copy has one, the data set is unchanged")
        body.flush()
        with mapped(body) as body_data:
            structure = walk_structure(body_data, replace(container, transfer_syntax=(
                transfer_syntax)), 0)
            header = standard_header(container, transfer_syntax, structure)
            with open(os.open(work_copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                              OWNER_ONLY_FILE), "wb") as writer:
                writer.write(header)
                _copy_from(body_data, 0, writer)
    return EngineInput(work_copy, len(header) + structure.image_offset, note)


def _engine_failure(error: BaseException, transfer_syntax: str) -> str:
    """A description of an engine error without its text: engine messages quote values (a
    damaged transfer syntax element, say, swallows the elements after it)."""
    text = str(error)
    if "Unsupported transfer syntax" in text:
        name = _transfer_syntax_name(transfer_syntax)
        which = f" ({name})" if name else " (an unknown one)"
        return (f"uses an encoding (transfer syntax){which} that Flywheel's de-identification "
                "engine cannot read")
    if "No elements found" in text:
        return ("Flywheel's de-identification engine finds no readable elements in it "
                "(a damaged header, or an encoding the engine cannot read)")
    return "Flywheel's de-identification engine cannot read its header (the file is damaged)"


def _is_engine_error(error: BaseException) -> bool:
    # The engine is Rust: a panic arrives as pyo3's PanicException, a BaseException.
    return isinstance(error, Exception) or type(error).__name__ == "PanicException"


def deidentify_file(engine: Context, source: Path, relative: str, target: Path) -> FileOutcome:
    """De-identify one file into ``target`` (a temporary name); classify what it was.

    A file that cannot be staged is an "error" outcome whose message names the problem and
    never a value. A failure to write into the staging folder (a full disk) is raised: it fails
    the session, not the file.
    """
    if source.name.upper() == "DICOMDIR":
        return FileOutcome(relative, "skipped",
                           "DICOMDIR index file (holds patient names; no image needs it)")
    try:
        handle = open(source, "rb")  # noqa: SIM115 (closed below)
    except OSError as error:
        return FileOutcome(relative, "error", "cannot be read"
                           + (f" ({error.strerror})" if error.strerror else "")
                           + ": check that the file is still there and that you may read it")
    work_copy = target.with_suffix(".source")
    try:
        with handle:
            return _deidentify(engine, source, relative, target, handle, work_copy)
    except Unstageable as error:
        target.unlink(missing_ok=True)
        return FileOutcome(relative, "error", str(error))
    finally:
        work_copy.unlink(missing_ok=True)


def _deidentify(engine: Context, source: Path, relative: str, target: Path, handle: BinaryIO,
                work_copy: Path) -> FileOutcome:
    named_dicom = source.suffix.lower() in DICOM_SUFFIXES
    with mapped(handle) as data:
        if not data:
            if named_dicom:
                raise Unstageable("is empty (0 bytes); " + RECOPY_ADVICE)
            return FileOutcome(relative, "skipped", "not a DICOM file (empty)")
        container = read_container(data)
        if container is None:
            if named_dicom:
                raise Unstageable("is named like a DICOM file but is not one (it may be a "
                                  "report, a text file or a damaged copy)")
            return FileOutcome(relative, "skipped", "not a DICOM file")
        engine_input = prepare_input(source, data, container, work_copy)
        if engine_input.path == source:
            return _write_staged(engine, relative, target, engine_input, container, data)
    with open(engine_input.path, "rb") as work_handle, mapped(work_handle) as work_data:
        return _write_staged(engine, relative, target, engine_input, container, work_data)


def _write_staged(engine: Context, relative: str, target: Path, engine_input: EngineInput,
                  container: Container, data: Buffer) -> FileOutcome:
    """Apply the profile to the header and write the staged file: the de-identified header,
    then the engine input's bytes from the pixel data on, unchanged."""
    try:
        header = bytes(engine.read_until_pixels(str(engine_input.path)))
        deidentified_header = bytes(engine.deid_header(header))
        fields = engine.parse_header(deidentified_header)
        meta = engine.get_fw_meta(fields)
    except BaseException as error:
        if not _is_engine_error(error):
            raise
        raise Unstageable(_engine_failure(error, container.transfer_syntax)) from None
    if len(header) != engine_input.image_offset:
        raise Unstageable("is damaged or unusual: Flywheel's de-identification engine and the "
                          "structure check disagree on where its image data starts; ask the "
                          "data team to look at it")
    sop_instance_uid = str(fields.get("SOPInstanceUID") or "")
    if not UID_PATTERN.match(sop_instance_uid):
        raise Unstageable("has no valid SOPInstanceUID (0008,0018), the image's unique "
                          "identifier, so it can be neither named nor uploaded; if it is an "
                          "image, " + RECOPY_ADVICE)
    modality = str(fields.get("Modality") or "")
    file_name = f"{sop_instance_uid}.{modality}.dcm" if modality else f"{sop_instance_uid}.dcm"
    label = acquisition_folder_name(str(meta.get("acquisition.label") or ""))
    digest = hashlib.sha256(deidentified_header)
    with open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER_ONLY_FILE),
              "wb") as writer:
        writer.write(deidentified_header)
        size = len(deidentified_header) + _copy_from(data, len(header), writer, digest)
    return FileOutcome(relative, "staged", detail=engine_input.note,
                       staged=f"{label}/{file_name}", sop_instance_uid=sop_instance_uid,
                       acquisition_uid=str(meta.get("acquisition.uid") or ""),
                       sha256=digest.hexdigest(), size=size)


def _place_files(work_dir: Path, outcomes: list[FileOutcome]) -> None:
    """Move staged files from their temporary names into acquisition folders.

    Two series that Flywheel would label alike get separate folders (``label``, ``label_2``);
    two files with one SOPInstanceUID are an error, since Flywheel would keep only one.
    """
    folder_of_series: dict[tuple[str, str], str] = {}
    used_folders: set[str] = set()
    staged_by_name: dict[str, FileOutcome] = {}
    for index, outcome in enumerate(outcomes):
        if outcome.kind != "staged":
            continue
        label, file_name = outcome.staged.split("/", 1)
        key = (label, outcome.acquisition_uid)
        if key not in folder_of_series:
            folder, counter = label, 1
            while folder in used_folders:
                counter += 1
                folder = f"{label}_{counter}"
            folder_of_series[key] = folder
            used_folders.add(folder)
        staged = f"{folder_of_series[key]}/{file_name}"
        temporary = work_dir / f".{index}.part"
        if staged in staged_by_name:
            temporary.unlink()
            first = staged_by_name[staged]
            outcomes[index] = FileOutcome(
                outcome.source, "error",
                f"has the same SOPInstanceUID as {first.source}; Flywheel would keep one")
            continue
        make_private_dir(work_dir / folder_of_series[key])
        os.replace(temporary, work_dir / staged)
        outcome.staged = staged
        staged_by_name[staged] = outcome


def _replace_dir(work_dir: Path, staged_session_dir: Path) -> None:
    """Rename the finished work folder into place, replacing an older staged copy."""
    old = staged_session_dir.with_name(f".{staged_session_dir.name}.old-{os.getpid()}")
    if staged_session_dir.exists():
        os.replace(staged_session_dir, old)
    os.replace(work_dir, staged_session_dir)
    shutil.rmtree(old, ignore_errors=True)


# ---- the engine in worker processes (deidpipe.parallel) ----------------------------------

_worker_engine: Context | None = None


def _start_worker(profile_text: str) -> None:
    global _worker_engine
    _worker_engine = make_engine(profile_text)


def _stage_in_worker(job: tuple[str, str, str]) -> FileOutcome:
    source, relative, target = job
    assert _worker_engine is not None
    return deidentify_file(_worker_engine, Path(source), relative, Path(target))


MANIFEST_SUFFIX = ".manifest.json"


def staged_dir_beside(manifest_path: str | Path) -> Path:
    """The staged folder a manifest stands for: the manifest lies beside it, named after it
    (``.../sub-01/ses-01.manifest.json`` for ``.../sub-01/ses-01``)."""
    manifest_path = Path(manifest_path)
    if not manifest_path.name.endswith(MANIFEST_SUFFIX):
        raise ValueError(f"a manifest's name ends with {MANIFEST_SUFFIX}: {manifest_path}")
    return manifest_path.with_name(manifest_path.name.removesuffix(MANIFEST_SUFFIX))


def stage_session(
    dicom_dir: str | Path,
    profile_path: str | Path,
    staged_session_dir: str | Path,
    manifest_path: str | Path,
    threads: int = 1,
) -> dict[str, Any]:
    """Stage every file below ``dicom_dir``; write the staged folder and the manifest."""
    dicom_dir = Path(dicom_dir)
    staged_session_dir = Path(staged_session_dir)
    profile_text = Path(profile_path).read_text(encoding="utf-8")
    make_engine(profile_text)  # a profile the engine refuses stops here, before any worker
    sources, outcomes = list_source_files(dicom_dir)
    make_private_dir(staged_session_dir.parent)
    work_dir = staged_session_dir.with_name(f".{staged_session_dir.name}.staging-{os.getpid()}")
    # A killed run leaves its work folder behind (staged copies: sensitive). Only one job
    # stages a session at a time, so every such sibling is stale.
    for stale in [*staged_session_dir.parent.glob(f".{staged_session_dir.name}.staging-*"),
                  *staged_session_dir.parent.glob(f".{staged_session_dir.name}.old-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    make_private_dir(work_dir)
    try:
        jobs = [(str(source), source.relative_to(dicom_dir).as_posix(),
                 str(work_dir / f".{index}.part")) for index, source in enumerate(sources)]
        file_outcomes = list(map_in_workers(_stage_in_worker, jobs, threads,
                                            _start_worker, (profile_text,)))
        _place_files(work_dir, file_outcomes)
        _replace_dir(work_dir, staged_session_dir)
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    outcomes = sorted(outcomes + file_outcomes, key=lambda outcome: outcome.source)
    manifest = {
        "source_dir": str(dicom_dir),
        "profile": {"file": Path(profile_path).name, "sha256": sha256_file(profile_path),
                    "version": load_profile(profile_path).version},
        "engine": engine_version(),
        "counts": {kind: sum(outcome.kind == kind for outcome in outcomes)
                   for kind in ("staged", "skipped", "error")},
        "files": [{"source": o.source, "staged": o.staged, "sop_instance_uid": o.sop_instance_uid,
                   "sha256": o.sha256, "bytes": o.size, **({"note": o.detail} if o.detail else {})}
                  for o in outcomes if o.kind == "staged"],
        "skipped": [{"source": o.source, "reason": o.detail}
                    for o in outcomes if o.kind == "skipped"],
        "errors": [{"source": o.source, "error": o.detail}
                   for o in outcomes if o.kind == "error"],
    }
    write_json(manifest_path, manifest)
    return manifest
