"""Files without a standard DICOM file header, and deflated data sets: the standard header
and the inflated bytes that Flywheel's engine (which reads standard files only) is given."""

import struct
import zlib
from typing import BinaryIO

from deidpipe.dicom.reader import (
    COPY_CHUNK,
    LONG_VRS,
    PREAMBLE,
    RECOPY_ADVICE,
    UID_PATTERN,
    Buffer,
    Container,
    Structure,
    Unstageable,
    pydicom_uid,
)

MAX_INFLATED = 4 << 30

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
    meta.setdefault(0x00020012, (b"UI", pydicom_uid().PYDICOM_IMPLEMENTATION_UID.encode()))
    body = b"".join(_meta_element(tag, vr, value) for tag, (vr, value) in sorted(meta.items()))
    return PREAMBLE + _meta_element(0x00020000, b"UL", struct.pack("<I", len(body))) + body


def inflate(data: Buffer, offset: int, into: BinaryIO) -> int:
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


