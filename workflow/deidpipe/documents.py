"""The text of an encapsulated document (PDF, CDA, plain text), for the identifier scan.

An Encapsulated PDF's pages are compressed streams (FlateDecode, mostly), so a scan of the raw
bytes sees none of their text: pypdf inflates them and reads the text operators. A CDA's
patient name is split over elements (``<given>Alice</given><family>Testperson</family>``):
its text nodes are joined with spaces so that the scan sees "Alice Testperson". Anything else
(a surface model, say) yields no text; the caller still lists it for a person to read.

Documents are untrusted input. Every failure to read one becomes a plain ``problem`` sentence,
never an exception or a traceback; what is read is capped (text, pages, time), and pypdf's log
and warnings, which can quote pieces of the document, are kept from every output.
"""

import logging
import struct
import time
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any
from xml.parsers import expat

from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pypdf import PdfReader
from pypdf.errors import DependencyError, DeprecationError, PyPdfError
from pypdf.generic import NameObject

ENCAPSULATED_DOCUMENT = Tag(0x0042, 0x0011)
MIME_TYPE_OF_ENCAPSULATED_DOCUMENT = Tag(0x0042, 0x0012)
ENCAPSULATED_DOCUMENT_LENGTH = Tag(0x0042, 0x0015)
SOP_CLASS_UID = Tag(0x0008, 0x0016)

MAX_TEXT_CHARS = 5_000_000  # text kept from one document, in characters
MAX_PAGES = 2_000
MAX_SECONDS = 60.0  # reading stops between two pages once this much time has gone
MAX_OUTLINE_ITEMS = 10_000

# Which MIME type a document of these SOP classes has when the data set does not say.
MIME_TYPE_OF_SOP_CLASS = {
    "1.2.840.10008.5.1.4.1.1.104.1": "application/pdf",
    "1.2.840.10008.5.1.4.1.1.104.2": "text/xml",
    "1.2.840.10008.5.1.4.1.1.104.3": "model/stl",
    "1.2.840.10008.5.1.4.1.1.104.4": "model/obj",
    "1.2.840.10008.5.1.4.1.1.104.5": "model/mtl",
}
ENCAPSULATED_CDA_STORAGE = "1.2.840.10008.5.1.4.1.1.104.2"
GENERIC_MIME_TYPES = frozenset({"", "application/octet-stream", "application/unknown"})
# Document information entries named in a "where" (others are "another entry": a key is
# document text too, and a "where" must never quote the document).
INFO_KEYS = ("Title", "Author", "Subject", "Keywords", "Creator", "Producer", "CreationDate",
             "ModDate", "Trapped")
BYTE_ORDER_MARKS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))
DAMAGED = "the PDF cannot be opened (it is damaged or encrypted)"


@dataclass
class DocumentText:
    """What could be read of one encapsulated document."""

    mime_type: str  # as the data set declares it, or as sniffed from the bytes
    kind: str  # "PDF", "CDA", "XML", "text", or the MIME type when no text is read from it
    texts: list[tuple[str, str]] = field(default_factory=list)  # (where, text)
    problem: str = ""  # '' when all was read; else what was not, in plain words
    pages: int = 0  # of a PDF
    pages_without_text: int = 0  # of a PDF: scanned pages, most likely (a person must look)


class _TextBudget:
    """The texts of one document, capped at ``MAX_TEXT_CHARS`` characters in all."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []
        self.left = MAX_TEXT_CHARS

    @property
    def full(self) -> bool:
        return self.left <= 0

    def add(self, where: str, text: str) -> None:
        """Keep ``text``, or what of it fits."""
        text = text.strip()
        if text and self.left > 0:
            self.texts.append((where, text[:self.left]))
            self.left -= len(text)


def _too_much_text() -> str:
    return f"only the first {MAX_TEXT_CHARS:,} characters of text were read"


# ---- what the document is ----


def _document_bytes(dataset: Dataset) -> bytes | None:
    element = dataset.get(ENCAPSULATED_DOCUMENT)
    if element is None:
        return None
    value = element.value
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    elif isinstance(value, str):  # a document written with a text VR by mistake
        data = value.encode("utf-8", errors="surrogateescape")
    else:
        data = b"".join(bytes(part) for part in value)  # VM > 1: concatenated
    length = dataset.get(ENCAPSULATED_DOCUMENT_LENGTH)
    declared = length.value if length is not None else None
    if isinstance(declared, int) and 0 < declared <= len(data):
        data = data[:declared]  # the length without the padding byte
    return data


def _declared_mime_type(dataset: Dataset) -> str:
    element = dataset.get(MIME_TYPE_OF_ENCAPSULATED_DOCUMENT)
    value = element.value if element is not None else None
    if isinstance(value, list | tuple):  # pydicom's MultiValue
        value = value[0] if value else ""
    return str(value or "").split(";")[0].strip().lower()


def _without_bom(data: bytes) -> bytes:
    for mark, _ in BYTE_ORDER_MARKS:
        if data.startswith(mark):
            return data[len(mark):]
    return data


def _sniff(data: bytes) -> str:
    """A MIME type from the first bytes: PDF, XML, plain text, or '' when none fits."""
    head = _without_bom(data[:4096]).lstrip()
    if head.startswith(b"<?xml"):
        return "text/xml"
    if b"%PDF-" in data[:1024]:  # a PDF's header may follow up to 1,024 bytes of anything
        return "application/pdf"
    if head.startswith((b"<!--", b"<!DOCTYPE")) or (head[:1] == b"<" and head[1:2].isalpha()):
        return "text/xml"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "text/plain"
    sample = data[:4096].rstrip(b"\0")
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(sample) - 4:  # not only a character cut at the sample's end
            return ""
    if sample and all(byte >= 0x20 or byte in b"\t\n\r\f" for byte in sample):
        return "text/plain"
    return ""


def _is_xml(mime_type: str) -> bool:
    return mime_type in ("text/xml", "application/xml") or mime_type.endswith("+xml")


def document_text(dataset: Dataset) -> DocumentText | None:
    """The text of the document ``dataset`` encapsulates; None when it holds none.

    Any data set with EncapsulatedDocument (0042,0011) counts, whatever its SOP class. Bytes
    that are plainly a PDF are read as one whatever the MIME type says; otherwise the declared
    MIME type decides (the sniffed one, or the SOP class's, when none or a generic one is).
    """
    try:
        data = _document_bytes(dataset)
        declared = _declared_mime_type(dataset)
        sop_class_element = dataset.get(SOP_CLASS_UID)
        sop_class = str(sop_class_element.value or "") if sop_class_element is not None else ""
    except (ValueError, TypeError, LookupError, AttributeError, OSError, struct.error):
        return DocumentText("", "document", problem="the encapsulated document cannot be read "
                            "from the data set (the element is damaged)")
    if data is None:
        return None
    sniffed = _sniff(data)
    mime_type = declared if declared not in GENERIC_MIME_TYPES else (
        sniffed or MIME_TYPE_OF_SOP_CLASS.get(sop_class, declared))
    if not data:
        return DocumentText(mime_type, _kind_without_text(mime_type))
    if sniffed == "application/pdf" or mime_type == "application/pdf":
        return _pdf_text(data, mime_type)
    if _is_xml(mime_type) or (sniffed == "text/xml" and not mime_type.startswith("text/")):
        return _xml_document_text(data.rstrip(b"\0"), mime_type, sop_class)
    if mime_type.startswith("text/"):
        return _plain_text(data.rstrip(b"\0"), mime_type)
    return DocumentText(mime_type, _kind_without_text(mime_type))


def _kind_without_text(mime_type: str) -> str:
    if mime_type == "application/pdf":
        return "PDF"
    if _is_xml(mime_type):
        return "XML"
    return mime_type or "document of unknown type"


# ---- plain text ----


def _decode_text(data: bytes) -> str:
    """UTF-8 (or the UTF-16 its byte order mark says), else Latin-1; of the first bytes only
    when there are more than the text budget could ever hold."""
    capped = data[:MAX_TEXT_CHARS * 4 + 4]
    for mark, encoding in BYTE_ORDER_MARKS:
        if capped.startswith(mark):
            return capped.decode(encoding, errors="replace").lstrip("\ufeff")
    try:
        return capped.decode("utf-8")
    except UnicodeDecodeError as error:
        if len(capped) < len(data) and error.start >= len(capped) - 3:  # a character cut
            return capped[:error.start].decode("utf-8")
        return capped.decode("latin-1")


def _plain_text(data: bytes, mime_type: str) -> DocumentText:
    text = _decode_text(data)
    result = DocumentText(mime_type, "text")
    budget = _TextBudget()
    budget.add("text", text)
    result.texts = budget.texts
    if len(text.strip()) > MAX_TEXT_CHARS:
        result.problem = _too_much_text()
    return result


# ---- XML (CDA) ----


class _XmlRefused(Exception):
    """Parsing stops: an entity declaration, or the text budget is spent."""


def _xml_texts(data: bytes) -> tuple[list[str], list[str], list[str], str]:
    """Text nodes, attribute values and comments of an XML document, and a problem.

    Expat, as ElementTree uses it, with a handler that refuses entity declarations (no entity
    is ever expanded: no billion laughs, no external files). Text pieces are whole text nodes,
    stripped, so that adjacent elements' texts can be joined with spaces.
    """
    texts: list[str] = []
    attributes: list[str] = []
    comments: list[str] = []
    pending: list[str] = []
    size = [0]

    def keep(into: list[str], text: str) -> None:
        text = text.strip()
        if text:
            into.append(text[:MAX_TEXT_CHARS - size[0]])
            size[0] += len(text) + 1  # and the space or line break it is joined with
            if size[0] > MAX_TEXT_CHARS:
                raise _XmlRefused(_too_much_text())

    def flush() -> None:
        if pending:
            keep(texts, "".join(pending))
            pending.clear()

    def start(_name: str, attrs: dict[str, str]) -> None:
        flush()
        for value in attrs.values():
            keep(attributes, value)

    def entity(*_args: object) -> None:
        raise _XmlRefused("the XML declares entities (a DOCTYPE with ENTITY declarations), "
                          "which are not expanded: it was not read")

    parser = expat.ParserCreate()
    parser.StartElementHandler = start
    parser.EndElementHandler = lambda _name: flush()
    parser.CharacterDataHandler = pending.append
    parser.CommentHandler = lambda text: (flush(), keep(comments, text))
    parser.EntityDeclHandler = entity
    parser.UnparsedEntityDeclHandler = entity
    parser.ExternalEntityRefHandler = lambda *_args: 0  # never fetched; expat reports an error
    problem = ""
    try:
        parser.Parse(data, True)
        flush()
    except _XmlRefused as refusal:
        problem = str(refusal)
        if problem.startswith("the XML declares"):
            texts, attributes, comments = [], [], []
    except expat.ExpatError as error:
        flush()
        problem = (f"the XML is not well formed (line {error.lineno}): only the text before "
                   "that point was read")
    except (ValueError, RecursionError, MemoryError):
        problem = "the XML cannot be parsed"
    return texts, attributes, comments, problem


def _xml_document_text(data: bytes, mime_type: str, sop_class: str) -> DocumentText:
    texts, attributes, comments, problem = _xml_texts(data)
    is_cda = sop_class == ENCAPSULATED_CDA_STORAGE or b"ClinicalDocument" in data[:4096]
    result = DocumentText(mime_type, "CDA" if is_cda else "XML", problem=problem)
    for where, pieces, separator in (("XML text", texts, " "),
                                     ("XML attribute values", attributes, "\n"),
                                     ("XML comments", comments, "\n")):
        if pieces:
            result.texts.append((where, separator.join(pieces)))
    return result


# ---- PDF ----

# RuntimeError includes RecursionError; LookupError KeyError and IndexError.
PDF_ERRORS: tuple[type[BaseException], ...] = (
    PyPdfError, DependencyError, DeprecationError, ValueError, LookupError, TypeError,
    AttributeError, RuntimeError, ArithmeticError, AssertionError, zlib.error, struct.error,
    OSError, MemoryError)


class _PypdfNotes(logging.Handler):
    """Counts what pypdf logs, by logger; keeps no message (one can quote the document)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.name] += 1

    @property
    def stream_damage(self) -> int:
        """Streams pypdf could not decode (it logs, then reads on without their data)."""
        return self.counts["pypdf.filters"]


@contextmanager
def _quiet_pypdf() -> Iterator[_PypdfNotes]:
    """While the block runs, what pypdf logs is only counted and its warnings are ignored:
    nothing of it reaches another handler, a stream or the warnings machinery."""
    logger = logging.getLogger("pypdf")
    level, propagate = logger.level, logger.propagate
    notes = _PypdfNotes()
    logger.addHandler(notes)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield notes
    finally:
        logger.removeHandler(notes)
        logger.setLevel(level)
        logger.propagate = propagate


def _pdf_value_text(value: Any, depth: int = 0) -> str:
    """A PDF object's text: strings as text, arrays joined, names without their slash."""
    if depth > 8:
        return ""
    if hasattr(value, "get_object"):
        value = value.get_object()
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, str):
        return value.removeprefix("/") if isinstance(value, NameObject) else value
    if isinstance(value, list | tuple):
        return " ".join(_pdf_value_text(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return ""
    return str(value)


def _open_pdf(data: bytes) -> tuple[Any, str]:
    """A PdfReader, decrypted when an empty password opens it; or None and a problem."""
    try:
        reader = PdfReader(BytesIO(data), strict=False)
    except PDF_ERRORS:
        if not data.endswith(b"\0"):
            return None, DAMAGED
        try:  # an odd-length document's padding, where the data set gives no length
            reader = PdfReader(BytesIO(data.rstrip(b"\0")), strict=False)
        except PDF_ERRORS:
            return None, DAMAGED
    try:
        if reader.is_encrypted and not reader.decrypt(""):
            return None, "the PDF is encrypted with a password: its text cannot be read"
    except DependencyError:
        return None, ("the PDF is encrypted with AES, which cannot be decrypted here (pypdf "
                      "needs the 'cryptography' package): its text cannot be read")
    except PDF_ERRORS:
        return None, DAMAGED
    return reader, ""


def _pdf_text(data: bytes, mime_type: str) -> DocumentText:
    result = DocumentText(mime_type, "PDF")
    problems: list[str] = []
    budget = _TextBudget()
    with _quiet_pypdf() as notes:
        reader, problem = _open_pdf(data)
        if reader is None:
            result.problem = problem
            return result
        if b"%%EOF" not in data[-1024:]:
            problems.append("the PDF is cut short (it has no end-of-file marker): only what "
                            "could be recovered was read")
        try:
            _read_info(reader, budget)
        except PDF_ERRORS:
            problems.append("the document information cannot be read")
        _read_pages(reader, budget, result, problems, notes)
        steps: tuple[tuple[str, Callable[[Any, _TextBudget], str]], ...] = (
                ("the form fields cannot be read", _read_fields),
                ("the XMP metadata cannot be read", _read_xmp),
                ("the bookmarks cannot be read", _read_outline),
                ("the XFA form data cannot be read", _read_xfa),
                ("the embedded files cannot be listed", _read_attachments))
        for failure, step in steps:
            if budget.full:
                break
            try:
                note = step(reader, budget)
            except PDF_ERRORS:
                note = failure
            if note:
                problems.append(note)
    if budget.full:
        problems.append(_too_much_text())
    result.texts = budget.texts
    result.problem = "; ".join(dict.fromkeys(problems))
    return result


def _read_info(reader: Any, budget: _TextBudget) -> None:
    info = reader.metadata
    if not info:
        return
    for key, value in info.items():
        name = str(key).removeprefix("/")
        label = name if name in INFO_KEYS else "another entry"
        budget.add(f"document information ({label})", _pdf_value_text(value))


def _read_pages(reader: Any, budget: _TextBudget, result: DocumentText,
                problems: list[str], notes: _PypdfNotes) -> None:
    try:
        count = len(reader.pages)
    except PDF_ERRORS:
        problems.append("the pages cannot be found (the PDF is damaged)")
        return
    result.pages = count
    if count > MAX_PAGES:
        problems.append(f"only the first {MAX_PAGES:,} of {count:,} pages were read")
    started = time.monotonic()
    unreadable: list[int] = []
    undecodable: list[int] = []
    for number in range(1, min(count, MAX_PAGES) + 1):
        if budget.full:
            break
        if time.monotonic() - started > MAX_SECONDS:
            problems.append(f"reading stopped after {MAX_SECONDS:.0f} seconds, at page "
                            f"{number} of {count:,}")
            break
        damage = notes.stream_damage
        try:
            page = reader.pages[number - 1]
            text = page.extract_text() or ""
        except PDF_ERRORS:
            unreadable.append(number)
            continue
        if notes.stream_damage > damage:
            undecodable.append(number)
        if not text.strip():
            result.pages_without_text += 1
        budget.add(f"page {number} text", text)
        try:
            _read_annotations(page, number, budget)
        except PDF_ERRORS:
            problems.append(f"the annotations of page {number} cannot be read")
    if unreadable:
        problems.append(f"the text of {_page_list(unreadable)} cannot be read (the PDF is "
                        "damaged)")
    if undecodable:
        problems.append(f"the content of {_page_list(undecodable)} cannot be fully "
                        "decompressed (the PDF is damaged): text may be missing")


def _page_list(numbers: list[int]) -> str:
    shown = ", ".join(str(number) for number in numbers[:10])
    more = f" and {len(numbers) - 10:,} more" if len(numbers) > 10 else ""
    return f"page{'s' if len(numbers) > 1 else ''} {shown}{more}"


def _read_annotations(page: Any, number: int, budget: _TextBudget) -> None:
    annotations = page.get("/Annots")
    if annotations is None:
        return
    pieces = []
    for annotation in _pdf_list(annotations):
        annotation = annotation.get_object() if hasattr(annotation, "get_object") else annotation
        if isinstance(annotation, dict):
            # Contents: the note; T: who wrote it (often a person's name); RC: rich text.
            pieces.extend(_pdf_value_text(annotation[key]) for key in ("/T", "/Contents", "/RC")
                          if key in annotation)
    budget.add(f"page {number} annotations", "\n".join(piece for piece in pieces if piece))


def _pdf_list(value: Any) -> list[Any]:
    value = value.get_object() if hasattr(value, "get_object") else value
    return list(value) if isinstance(value, list) else []


def _read_fields(reader: Any, budget: _TextBudget) -> str:
    fields = reader.get_fields() or {}
    names, values = [], []
    for name, field_ in fields.items():
        names.append(str(name))
        value = field_.get("/V") if isinstance(field_, dict) else None
        if value is not None:
            values.append(_pdf_value_text(value))
    # Field names are the document's text too, so a "where" never names a field.
    budget.add("form field values", "\n".join(value for value in values if value.strip()))
    budget.add("form field names", "\n".join(names))
    return ""


def _read_xmp(reader: Any, budget: _TextBudget) -> str:
    root = reader.trailer["/Root"].get_object()
    metadata = root.get("/Metadata")
    if metadata is None:
        return ""
    texts, attributes, comments, problem = _xml_texts(metadata.get_object().get_data())
    budget.add("XMP metadata", " ".join(texts) + "\n" + "\n".join(attributes + comments))
    return f"the XMP metadata: {problem}" if problem else ""


def _read_outline(reader: Any, budget: _TextBudget) -> str:
    titles: list[str] = []
    stack = [iter(reader.outline)]
    while stack and len(titles) < MAX_OUTLINE_ITEMS:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
        elif isinstance(item, list):
            if len(stack) < 32:
                stack.append(iter(item))
        else:
            titles.append(_pdf_value_text(getattr(item, "title", "") or ""))
    budget.add("bookmarks", "\n".join(titles))
    return ""


def _read_xfa(reader: Any, budget: _TextBudget) -> str:
    packets = reader.xfa or {}
    datasets = packets.get("datasets")
    if not datasets:
        return ""
    texts, attributes, _, problem = _xml_texts(datasets)
    budget.add("XFA form data", " ".join(texts) + "\n" + "\n".join(attributes))
    return f"the XFA form data: {problem}" if problem else ""


def _read_attachments(reader: Any, budget: _TextBudget) -> str:
    names = list(reader.attachments)
    if not names:
        return ""
    budget.add("embedded file names", "\n".join(str(name) for name in names))
    return (f"the PDF embeds {len(names)} file{'s' if len(names) > 1 else ''}, "
            "which were not read")
