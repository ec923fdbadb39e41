"""Verify one staged session before anything is uploaded; write the report as JSON.

Checks are listed in ``CHECKS`` with their default severity; the config may set each to
``fail``, ``warn`` or ``off`` (``inventory`` is always ``fail``: an incomplete session is
never uploaded). A finding names the file, the tag path and, for leaks, which source attribute
matched: never the value. Besides findings the report carries what a person reviews: private
creators, burned-in flags, distinct free-text values, the Basic Profile audit and the
attribute changes staging made.
"""

import csv
import hashlib
import io
import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.multival import MultiValue

from deidpipe.basic_profile import describe_tag, populated_basic_profile_tags
from deidpipe.burned_in import BurnedInScreen
from deidpipe.dicom.datasets import ConversionMemo, NotPlain, read_file
from deidpipe.dicom.reader import PIXEL_DATA, UNDEFINED_LENGTH, Element, mapped
from deidpipe.documents import document_text
from deidpipe.errors import PipelineError
from deidpipe.files import files_below, read_json, write_json, write_private_bytes
from deidpipe.findings import group_findings
from deidpipe.identifiers import (
    IdentifierSet,
    Matcher,
    Needle,
    Nesting,
    is_short_number,
    iter_elements,
)
from deidpipe.ocr import (
    PixelDecodeError,
    engine_description,
    frames_to_read,
    read_text,
    thumbnail_png,
    viewable_frames,
)
from deidpipe.parallel import map_in_workers
from deidpipe.private_knowledge import load_knowledge_base, path_segment
from deidpipe.profile import Profile, load_profile
from deidpipe.review import ReviewImage, ReviewText, review_page_beside, write_review_page
from deidpipe.stage import list_source_files

WITHHELD = "(withheld: holds an identifier)"
SEVERITY_ORDER = {"pass": 0, "warn": 1, "fail": 2}
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
FIRST_IMAGE_DATA_TAG = 0x7FE00008
MISSING = object()
SOP_INSTANCE_UID = 0x00080018
PREAMBLE_BYTES = 128
COMPARE_CHUNK = 1 << 20


@dataclass(frozen=True)
class Check:
    """One verification check, declared once: the config schema, the README's table and the
    report page's Checks section follow this registry (tests/test_check_registry.py)."""

    default: str
    description: str
    # Severities the config may give it; 'keep' (private tags only) is reported, never a finding.
    allowed: tuple[str, ...] = ("fail", "warn", "off")

    @property
    def configurable(self) -> bool:
        return len(self.allowed) > 1


CHECKS: dict[str, Check] = {
    "inventory": Check("fail", "every source file is staged or listed as skipped; every staged "
                       "file is listed and unaltered", allowed=("fail",)),
    "integrity": Check("fail", "staged files parse; pixel data and frame count equal the "
                       "source's"),
    "profile_actions": Check("fail", "every action of the profile holds in every staged file"),
    "deidentification_method": Check("fail", "DeidentificationMethod names the profile version"),
    "identifier_leak": Check("fail", "no patient identifier of the source (IDs, birth date, "
                             "address, telephone, full name in any order or format, initials "
                             "with the family name) remains in any element, in the text of "
                             "an encapsulated document, in the raw bytes, or in file and "
                             "folder names"),
    "name_part": Check("warn", "no single part (3+ letters) of the patient's name remains"),
    "staff_name": Check("fail", "no full name from any other PN attribute of the source "
                        "(operator, physicians, anyone) remains"),
    "labels": Check("fail", "subject and session labels hold no identifier"),
    "patient_age": Check("fail", "no staged PatientAge is 90 years or more (HIPAA Safe Harbor "
                         "counts such ages as identifiers)"),
    "burned_in_text": Check("fail", "no text read in the pixels (OCR) holds an identifier of "
                            "the source"),
    "burned_in_text_review": Check("warn", "text read in the pixels that matches no "
                                   "identifier, and images that could not be decoded for OCR, "
                                   "are listed for a person to look at"),
    "burned_in_annotation": Check("fail", "no staged image says BurnedInAnnotation = YES"),
    "burned_in_risk": Check("warn", "images of classes where burned-in text is common "
                            "(secondary capture, ultrasound, screen saves, dose reports) "
                            "are flagged for a look"),
    "encapsulated_document": Check("warn", "every encapsulated document (PDF, CDA) is listed "
                                   "for a person to read: scanned pages are images no text "
                                   "scan sees"),
    "private_tags": Check("warn", "private elements that TCIA's knowledge base does not know "
                          "to be safe and that hold text are listed with their values",
                          allowed=("keep", "warn", "fail")),
}
LEAK_CHECK_OF_KIND = {"identifier": "identifier_leak", "name_part": "name_part",
                      "staff_name": "staff_name"}
# Free-text attributes collected for a person to read (besides every LT, ST and UT element).
FREE_TEXT_KEYWORDS = frozenset({
    "StudyDescription", "SeriesDescription", "ProtocolName", "ImageComments", "StudyComments",
    "RequestedProcedureDescription", "PerformedProcedureStepDescription",
    "AdditionalPatientHistory",
})
FREE_TEXT_VRS = frozenset({"LT", "ST", "UT"})
# Values of these VRs are numbers (or UIDs made of numbers): a short numeric ID found in one
# is a coincidence.
NUMERIC_VRS = frozenset({"DS", "IS", "US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "OF", "OD",
                         "OL", "OV", "OW", "AT", "UI"})


def resolve_severities(configured: dict[str, str] | None) -> dict[str, str]:
    """Each check's severity: the config's where given ('keep' means off for private tags)."""
    severities = {name: check.default for name, check in CHECKS.items()}
    for name, severity in (configured or {}).items():
        if name not in CHECKS:
            raise PipelineError(f"setting 'checks.{name}': there is no check of that name; "
                                f"checks: {', '.join(CHECKS)}")
        if not CHECKS[name].configurable and severity != CHECKS[name].default:
            raise PipelineError(f"setting 'checks.{name}' cannot be changed: a session with "
                                "missing or altered files is never uploaded")
        if severity not in CHECKS[name].allowed:
            raise PipelineError(f"setting 'checks.{name}' must be "
                                + " or ".join(CHECKS[name].allowed))
        severities[name] = "off" if severity == "keep" else severity
    return severities


@dataclass
class Finding:
    check: str
    file: str
    tag: str
    message: str
    source_attribute: str = ""
    source_file: str = ""
    severity: str = ""  # set from the configured severity of the check

    def as_dict(self) -> dict[str, str]:
        found = {"check": self.check, "severity": self.severity, "file": self.file,
                 "tag": self.tag, "message": self.message}
        if self.source_attribute:
            found["source_attribute"] = self.source_attribute
        if self.source_file:
            found["source_file"] = self.source_file
        return found


# A private element to review: (creator, group, element byte, name, disposition, VR).
PrivateKey = tuple[str, str, str, str, str, str]
# VRs whose values are text a person can read (DS and IS are numbers; UIDs are text TCIA
# hashes). Private UN and OB values count as text when their bytes read as text.
TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC",
                      "UI", "UR", "UT"})
SAFE_DISPOSITION = "k"
MAX_PRIVATE_VALUE = 200  # characters of a private value shown for review
MAX_PRIVATE_VALUES = 20  # distinct values shown per private element


@dataclass
class SessionContext:
    """What the checks of one session need to know, and what they tally for the report."""

    dicom_dir: Path
    staged_session_dir: Path
    manifest: dict[str, Any]
    profile: Profile
    labels: dict[str, str]
    severities: dict[str, str]
    identifiers: IdentifierSet
    matcher: Matcher = field(default_factory=lambda: Matcher([]))
    burned_in: BurnedInScreen | None = None
    findings: list[Finding] = field(default_factory=list)
    private_creators: Counter[tuple[str, str]] = field(default_factory=Counter)
    # Files holding each private creator's elements, and each free-text value: counts, so that
    # memory does not grow with the session (each file's checks count a file once).
    private_creator_files: Counter[tuple[str, str]] = field(default_factory=Counter)
    free_text: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    # Private elements judged against the knowledge base: how many of each verdict, the files
    # holding each element to review, and the files holding each of its distinct values.
    private_verdicts: Counter[str] = field(default_factory=Counter)
    private_review_files: Counter[PrivateKey] = field(default_factory=Counter)
    private_values: Counter[tuple[PrivateKey, str]] = field(default_factory=Counter)
    private_withheld: Counter[PrivateKey] = field(default_factory=Counter)
    free_text_withheld: set[tuple[str, str]] = field(default_factory=set)
    basic_profile: Counter[tuple[int, str]] = field(default_factory=Counter)
    changes: Counter[tuple[int, str]] = field(default_factory=Counter)
    burned_in_flags: list[dict[str, str]] = field(default_factory=list)
    documents: list[dict[str, Any]] = field(default_factory=list)
    # OCR: the files chosen (staged name -> is its series' thumbnail), frames chosen in each,
    # and what it read.
    ocr_plan: dict[str, bool] = field(default_factory=dict)
    ocr_sample: tuple[str, ...] = ("first", "middle", "last")
    ocr_counts: Counter[str] = field(default_factory=Counter)
    pixel_text: list[dict[str, Any]] = field(default_factory=list)
    review_images: list[ReviewImage] = field(default_factory=list)
    phi_rows: list[list[str]] | None = None

    def active(self, check: str) -> bool:
        return self.severities[check] != "off"

    def add(self, finding: Finding) -> None:
        if self.active(finding.check):
            finding.severity = self.severities[finding.check]
            self.findings.append(finding)


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
        if int(element.tag) not in PIXEL_TAGS:
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
                   if element.tag in PIXEL_TAGS]
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


def _read_source(path: Path) -> Dataset | None:
    """The whole source file (pixel data too), or None if it cannot be read."""
    try:
        # force: old exports without the 128-byte preamble and file header are staged too.
        dataset = dcmread(path, force=True)
        return dataset if "SOPInstanceUID" in dataset else None
    except READ_ERRORS:
        return None  # staging already listed this file as an error


def _read_source_header(path: Path) -> tuple[Dataset | None, int]:
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


def check_profile_actions(dataset: Dataset, name: str, context: SessionContext) -> None:
    """Every profile action holds: replaced values equal their replacement, removed are absent."""
    for profile_field in context.profile.fields:
        keyword = profile_field["name"]
        tag = _tag_of_keyword(keyword)
        element = dataset[tag] if tag is not None and tag in dataset else None
        if profile_field.get("remove"):
            if element is not None:
                context.add(Finding("profile_actions", name, element_name(element),
                                    f"{keyword} should have been removed but is present"))
            continue
        replacement = str(profile_field.get("replace-with", ""))
        if element is None:
            context.add(Finding("profile_actions", name, keyword,
                                f"{keyword} should be present (set to the profile's value) "
                                "but is missing"))
        elif not _value_equals(element, replacement):
            what = "empty" if replacement == "" else "the profile's replacement"
            context.add(Finding("profile_actions", name, element_name(element),
                                f"{keyword} should be {what} but holds another value"))


@lru_cache(maxsize=4096)
def _tag_of_keyword(keyword: str) -> int | None:
    return tag_for_keyword(keyword)


def _value_equals(element: DataElement, replacement: str) -> bool:
    """VR-aware comparison of an element's value with a profile's replacement text."""
    if replacement == "":
        return element.is_empty
    value = element.value
    if element.VR in ("DS", "FD", "FL"):
        try:
            return float(value) == float(replacement)
        except (TypeError, ValueError):
            return False
    if element.VR in ("IS", "SS", "US", "SL", "UL"):
        try:
            return int(value) == int(replacement)
        except (TypeError, ValueError):
            return False
    if isinstance(value, MultiValue):
        value = "\\".join(str(part) for part in value)
    return str(value).strip() == replacement.strip()


def check_deidentification_method(dataset: Dataset, name: str, context: SessionContext) -> None:
    """DeidentificationMethod names the profile's version, so anyone can see what was applied."""
    value = str(dataset.get("DeidentificationMethod", "") or "")
    if value != context.profile.version:
        context.add(Finding("deidentification_method", name,
                            "DeidentificationMethod (0012,0063)",
                            f"DeidentificationMethod should be '{context.profile.version}'"
                            + (" but is missing" if not value else " but holds another value")))


# An Age String (AS) is nnnD, nnnW, nnnM or nnnY; some writers drop the padding or the unit.
AGE = re.compile(r"^\s*(\d{1,6})\s*([DWMY]?)\s*$", re.IGNORECASE)
DAYS_PER_UNIT = {"D": 1.0, "W": 7.0, "M": 365.25 / 12, "Y": 365.25, "": 365.25}
OLDEST_AGE_SHOWN = 89  # HIPAA Safe Harbor: ages over 89 are identifiers


def age_in_years(value: str) -> float | None:
    """Years in an Age String ('090Y', '1095W', '33000D'); None if it is not an age."""
    match = AGE.match(value)
    if not match:
        return None
    number, unit = match.groups()
    return int(number) * DAYS_PER_UNIT[unit.upper()] / 365.25


def check_patient_age(dataset: Dataset, name: str, context: SessionContext) -> None:
    """No staged PatientAge (at any depth) is 90 years or more, whatever unit it is in."""
    if not context.active("patient_age"):
        return
    for nesting, element in walk_elements(dataset):
        if element.tag != 0x00101010 or element.is_empty:
            continue
        years = age_in_years(str(element.value))
        if years is not None and years >= OLDEST_AGE_SHOWN + 1:
            context.add(Finding("patient_age", name, tag_path(nesting, element),
                                "PatientAge is 90 years or more (value not shown): HIPAA "
                                "Safe Harbor counts ages over 89 as identifiers; empty "
                                "PatientAge in the profile, or set it to 90Y for such "
                                "patients"))


def scan_elements(dataset: Dataset, name: str, context: SessionContext
                  ) -> set[tuple[str, str]]:
    """Leak scan of every element (file meta, sequences, private tags, elements after the
    pixel data); tally private tags and free text on the way. Returns the (source attribute,
    tag path) pairs found, so that the byte scan does not report them again."""
    elements = [*walk_elements(dataset.file_meta), *walk_elements(dataset)]
    texts = [element_text(element) for _nesting, element in elements]
    numeric = {index for index, (_nesting, element) in enumerate(elements)
               if element.VR in NUMERIC_VRS}
    found = context.matcher.find_each(texts, numeric)
    places_found = set()
    for index, needles in sorted(found.items()):
        path = tag_path(*elements[index])
        for needle in needles:
            places_found.add((needle.attribute, path))
            context.add(_leak_finding(needle, name, path))
    creators_in_file: set[tuple[str, str]] = set()
    free_text_in_file: set[tuple[str, str, str]] = set()
    private_in_file: set[PrivateKey] = set()
    private_values_in_file: set[tuple[PrivateKey, str]] = set()
    for index, (nesting, element) in enumerate(elements):
        if element.tag.is_private and element.tag.element >= 0x1000:
            creator = (element.private_creator or "(no private creator)",
                       f"{element.tag.group:04X}")
            context.private_creators[creator] += 1
            creators_in_file.add(creator)
            key = judge_private_element(nesting, element, texts[index], context)
            if key is not None:
                private_in_file.add(key)
                if index in found:
                    context.private_withheld[key] += 1
                else:
                    private_values_in_file.add((key, _shown_private_value(texts[index])))
        if texts[index].strip() and (element.keyword in FREE_TEXT_KEYWORDS
                                     or element.VR in FREE_TEXT_VRS):
            attribute = element.keyword or element_name(element)
            tag = f"({element.tag.group:04X},{element.tag.element:04X})"
            value = texts[index].strip()
            if index in found:
                context.free_text_withheld.add((attribute, value))
            else:
                free_text_in_file.add((attribute, tag, value))
    context.private_creator_files.update(creators_in_file)
    context.free_text.update(free_text_in_file)
    context.private_review_files.update(private_in_file)
    context.private_values.update(private_values_in_file)
    return places_found


def judge_private_element(nesting: Nesting, element: DataElement, text: str,
                          context: SessionContext) -> PrivateKey | None:
    """Tally what TCIA's knowledge base says of a private element; return its key when a
    person must read it (not known to be safe, and it holds text)."""
    path = (*(path_segment(int(sequence.tag), sequence.private_creator
                           if sequence.tag.is_private else None) for sequence, _n in nesting),
            path_segment(int(element.tag), element.private_creator))
    info = load_knowledge_base().lookup(path)
    if info is not None and info.disposition == SAFE_DISPOSITION:
        context.private_verdicts["known_safe"] += 1
        return None
    if not _holds_text(element, text):
        context.private_verdicts["no_text"] += 1
        return None
    context.private_verdicts["review"] += 1
    disposition = DISPOSITION_NAMES[info.disposition] if info else "not in the knowledge base"
    return (element.private_creator or "(no private creator)", f"{element.tag.group:04X}",
            f"{element.tag.element & 0xFF:02X}", info.name if info else "", disposition,
            element.VR)


DISPOSITION_NAMES = {"d": "TCIA deletes it", "h": "TCIA hashes it (a UID)",
                     "o": "TCIA shifts it (a date)", "oi": "TCIA shifts it (a date)",
                     "na": "TCIA: not applicable", "": "TCIA: no decision",
                     "k": "TCIA keeps it"}


def _holds_text(element: DataElement, text: str) -> bool:
    """A value a person can read: a text VR, or bytes (UN, OB) that are mostly letters."""
    if element.VR in TEXT_VRS:
        return bool(text.strip(" \0"))
    if element.VR not in ("UN", "OB") or not text:
        return False
    stripped = text.strip(" \0")
    printable = sum(character.isprintable() and character.isascii() for character in stripped)
    alphanumeric = sum(character.isalnum() and character.isascii() for character in stripped)
    return alphanumeric >= 3 and printable >= 0.9 * len(stripped)


def _shown_private_value(text: str) -> str:
    value = text.strip(" \0")
    return value if len(value) <= MAX_PRIVATE_VALUE else value[:MAX_PRIVATE_VALUE] + "…"


def scan_document(dataset: Dataset, name: str, context: SessionContext) -> None:
    """An encapsulated document (PDF, CDA...): its text, inflated and decoded, goes through
    the matcher; the document is listed for a person to read either way, because a scanned
    form is an image inside the PDF that no text scan sees."""
    document = document_text(dataset)
    if document is None:
        return
    place = f"EncapsulatedDocument (0042,0011) > {document.kind}"
    found = context.matcher.find_in_texts([text for _where, text in document.texts])
    for index, needles in sorted(found.items()):
        for needle in needles:
            context.add(_leak_finding(needle, name, f"{place} {document.texts[index][0]}"))
    pages = ""
    if document.pages:
        pages = f" of {document.pages} page(s)"
        if document.pages_without_text:
            pages += (f", {document.pages_without_text} without text (scanned, most likely: "
                      "only a person can read those)")
    message = (f"an encapsulated {document.kind} document{pages}: read it before it is shared "
               "(its text was also searched for identifiers)")
    if document.problem:
        message += f"; not all of it could be read: {document.problem}"
    context.add(Finding("encapsulated_document", name, "EncapsulatedDocument (0042,0011)",
                        message))
    context.documents.append({"file": name, "kind": document.kind,
                              "mime_type": document.mime_type, "pages": document.pages,
                              "pages_without_text": document.pages_without_text,
                              "problem": document.problem})


def _leak_finding(needle: Needle, name: str, where: str) -> Finding:
    what = {"identifier": f"holds the source's {needle.attribute}",
            "name_part": f"holds a part of the source's {needle.attribute}",
            "staff_name": f"holds the name in the source's {needle.attribute}"}[needle.kind]
    return Finding(LEAK_CHECK_OF_KIND[needle.kind], name, where, f"{what} (value not shown)",
                   needle.attribute)


def scan_raw_bytes(data: bytes, staged_read: StagedRead, name: str,
                   places_found: set[tuple[str, str]], context: SessionContext) -> None:
    """Search the staged file's bytes. A hit inside an element's value is that element's
    (reported at its tag path, under the element scan's rules: no short numbers in numeric
    values, nothing the element scan already reported there); only bytes no parsed element
    holds (the preamble, data after the pixel data or between elements that cannot be
    parsed) are reported as raw bytes."""
    starts = [span.start for span in staged_read.spans]
    reported = set(places_found)
    for needle, offset in _find_outside_pixels(data, staged_read.native_pixels, context):
        index = bisect_right(starts, offset) - 1
        span = staged_read.spans[index] if index >= 0 else None
        if span is not None and offset < span.end:
            nesting, element = span.located()
            if is_short_number(needle.folded) and element.VR in NUMERIC_VRS:
                continue  # a measurement or UID component, as in the element scan
            where = tag_path(nesting, element)
        else:
            where = _unowned_place(offset, staged_read.pixel_end)
        if (needle.attribute, where) not in reported:
            reported.add((needle.attribute, where))
            context.add(_leak_finding(needle, name, where))


def _find_outside_pixels(data: bytes, native_pixels: tuple[int, int] | None,
                         context: SessionContext) -> list[tuple[Needle, int]]:
    """The matcher's raw hits in the file, uncompressed pixel values left out (a zero byte
    stands in for them, so that no match runs across the gap); offsets are the file's."""
    if native_pixels is None:
        return context.matcher.find_in_bytes(data)
    start, end = native_pixels
    hits = context.matcher.find_in_bytes(data[:start] + b"\0" + data[end:])
    return [(needle, offset if offset < start else offset + end - start - 1)
            for needle, offset in hits if offset != start]


def _unowned_place(offset: int, pixel_end: int | None) -> str:
    if offset < PREAMBLE_BYTES:
        return "file preamble"
    if pixel_end is not None and offset >= pixel_end:
        return "bytes after the pixel data"
    return "bytes that no element the reader could parse holds"


def _image_data_span(dataset: Dataset) -> tuple[int | None, int | None]:
    """(byte offset of the first image data element, byte offset just after the pixel data),
    each None when unknown; read from the raw elements, before conversion."""
    starts = []
    for tag in PIXEL_TAGS:
        raw = dataset.get_item(tag) if tag in dataset else None
        if isinstance(raw, RawDataElement):
            # Image data VRs (OB, OW, OF, OD) have a 12-byte head in explicit VR, 8 in implicit.
            starts.append(raw.value_tell - (8 if raw.is_implicit_VR else 12))
    pixel_data = dataset.get_item(0x7FE00010) if 0x7FE00010 in dataset else None
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


def check_integrity(staged: Dataset, staged_read: StagedRead, staged_data: bytes,
                    source: SourceHeader, name: str, context: SessionContext) -> None:
    """Pixel data byte-identical to the source's; same number of frames.

    Staging copies everything from the image data on as it is, so the two files' bytes from
    there to the end are compared first; only when they differ (a source stored deflated,
    or a real difference) are both files' image data elements read and compared one by one.
    """
    if source.dataset is None:
        return
    staged_start = (staged_read.pixel_start if staged_read.pixel_start is not None
                    else len(staged_data))
    if not _same_bytes_from(staged_data, staged_start, source.path, source.image_start):
        whole_source = _read_source(source.path)
        if whole_source is None:
            context.add(Finding("integrity", name, "", "the pixel data could not be compared "
                                "with the source's (the source cannot be read to its end)"))
        else:
            _compare_image_data(staged, whole_source, name, context)
    if _frames(source.dataset) != _frames(staged):
        context.add(Finding("integrity", name, "NumberOfFrames (0028,0008)",
                            f"{_frames(staged)} frame(s) staged, the source has "
                            f"{_frames(source.dataset)}"))


def _same_bytes_from(staged_data: bytes, staged_start: int, source_path: Path,
                     source_start: int) -> bool:
    staged_tail = memoryview(staged_data)[staged_start:]
    compared = 0
    with open(source_path, "rb") as handle:
        handle.seek(source_start)
        while chunk := handle.read(COMPARE_CHUNK):
            if staged_tail[compared:compared + len(chunk)] != chunk:
                return False
            compared += len(chunk)
    return compared == len(staged_tail)


def _compare_image_data(staged: Dataset, source: Dataset, name: str,
                        context: SessionContext) -> None:
    for tag in PIXEL_TAGS:
        in_source, in_staged = tag in source, tag in staged
        if in_source != in_staged:
            context.add(Finding("integrity", name, describe_tag(tag)[1],
                                "pixel data " + ("is missing from the staged file" if in_source
                                                 else "was added by staging")))
        elif in_source and source.get_item(tag).value != staged.get_item(tag).value:
            context.add(Finding("integrity", name, f"{describe_tag(tag)[0]} "
                                f"{describe_tag(tag)[1]}",
                                "pixel data differs from the source's"))


def _frames(dataset: Dataset) -> int:
    try:
        return int(dataset.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        return 1


def tally_changes(staged: Dataset, staged_read: StagedRead, source: Dataset | None, name: str,
                  context: SessionContext) -> None:
    """Count what staging did to each top-level attribute before the image data (values go
    to the PHI log only). Elements whose stored bytes are unchanged are not converted."""
    if source is None:
        return
    source_raw = _raw_values(source)
    staged_raw = staged_read.raw_values
    source_tags = {int(tag) for tag in source.keys()}
    staged_tags = {int(tag) for tag in staged.keys()}
    for tag in sorted(source_tags | staged_tags):
        if tag >= FIRST_IMAGE_DATA_TAG:
            break  # the image data and what follows are compared as bytes (integrity)
        if tag in source_tags and tag in staged_tags:
            if tag in source_raw and source_raw[tag] == staged_raw.get(tag, MISSING):
                continue
            after_value = staged[tag].value
            if source[tag].value == after_value:
                continue
            action = "replaced" if after_value else "emptied"
        elif tag in staged_tags:
            action = "added" if staged[tag].value else "added (empty)"
        else:
            action = "removed"
        context.changes[(tag, action)] += 1
        if context.phi_rows is not None:
            keyword, tag_text = describe_tag(tag)
            context.phi_rows.append([name, keyword, tag_text, action,
                                     _logged_value(source, tag), _logged_value(staged, tag)])


def _logged_value(dataset: Dataset, tag: Any) -> str:
    if tag not in dataset:
        return ""
    try:
        return element_text(dataset[tag])
    except READ_ERRORS:
        return "(cannot be read)"


def check_burned_in(dataset: Dataset, name: str, context: SessionContext) -> bool:
    """Flag images of classes where text is often burned in; True if this one is such."""
    if context.burned_in is None:
        return False
    flags = context.burned_in.flags(dataset)
    for flag in flags:
        if context.active(flag.check):
            advice = ("open the image and look for names, IDs or dates in the pixels before "
                      "it is shared, or leave the series out")
            message = (f"{flag.reason}; {advice}" if flag.check == "burned_in_annotation"
                       else f"may have text burned into the image: {advice}. Why flagged: "
                            f"{flag.reason}")
            context.add(Finding(flag.check, name, "pixel data (burned-in text)", message))
            context.burned_in_flags.append({"file": name, "reason": flag.reason,
                                            "severity": context.severities[flag.check]})
    return bool(flags) or context.burned_in.is_risky_class(dataset)


# ---- text burned into the pixels (OCR) -------------------------------------------------------

OCR_CHECKS = ("burned_in_text", "burned_in_text_review")
OCR_ALL_FRAMES = ("first", "middle", "last")
# Recognised text with fewer letters and digits than this (an orientation letter 'R', a '5')
# is counted but not listed: it cannot hold an identifier the matcher could find.
MIN_OCR_CHARACTERS = 3
MAX_REVIEW_IMAGES = 1000  # thumbnails kept for the review page (it shows 500 at most)


@dataclass(frozen=True)
class ImageInfo:
    """What choosing images for OCR needs of a source file (from its header)."""

    series: str
    instance: int | None
    frames: int
    has_pixels: bool


def ocr_plan(entries: list[dict[str, Any]], infos: list[ImageInfo | None],
             sample: tuple[str, ...]) -> dict[str, bool]:
    """The staged files OCR reads in every session (the ``sample`` of each series by
    InstanceNumber), each mapped to whether it is its series' thumbnail for the review page.
    Files at risk of burned-in text are read too; that is decided file by file."""
    series: dict[str, list[tuple[int, int, str]]] = {}
    for order, (entry, info) in enumerate(zip(entries, infos, strict=True)):
        if info is not None and info.has_pixels:
            instance = info.instance if info.instance is not None else order
            series.setdefault(info.series, []).append((instance, order, entry["staged"]))
    plan: dict[str, bool] = {}
    for members in series.values():
        members.sort()
        picked = [members[index][2] for index in frames_to_read(len(members), sample)]
        for position, staged in enumerate(picked):
            plan[staged] = position == 0
    return plan


def _image_region(box: tuple[tuple[int, int], ...], width: int, height: int) -> str:
    """Where in the image a text box is, in words: 'top left', 'middle', 'bottom right'."""
    x = sum(point[0] for point in box) / len(box) / max(width, 1)
    y = sum(point[1] for point in box) / len(box) / max(height, 1)
    row = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else "middle"
    column = "left" if x < 1 / 3 else "right" if x > 2 / 3 else "centre"
    return "middle" if (row, column) == ("middle", "centre") else f"{row} {column}"


def read_burned_in_text(dataset: Dataset, staged: str, name: str, at_risk: bool,
                        context: SessionContext) -> None:
    """OCR the chosen frames of one staged image and match what it reads against the
    session's identifiers: a match fails, other text and images that cannot be decoded are
    for a person to look at. Thumbnails go to the review page beside the staged session."""
    if not any(context.active(check) for check in OCR_CHECKS) or "PixelData" not in dataset:
        return
    frames_in_file = _frames(dataset)
    context.ocr_counts["images"] += 1
    context.ocr_counts["frames"] += frames_in_file
    is_thumbnail = context.ocr_plan.get(staged)
    if not at_risk and is_thumbnail is None:
        return
    frames = frames_to_read(frames_in_file, OCR_ALL_FRAMES if at_risk else context.ocr_sample)
    series = staged.rpartition("/")[0]
    reasons_of_file = ["at risk of burned-in text"] if at_risk else []
    try:
        images = viewable_frames(dataset, frames)
    except PixelDecodeError as error:
        context.ocr_counts["not_decoded"] += len(frames)
        context.add(Finding("burned_in_text_review", name, "pixel data",
                            f"{error}: OCR could not read this image, so open it and look for "
                            "names, IDs or dates before it is shared"))
        context.review_images.append(ReviewImage(staged, frames[0], series, (
            *reasons_of_file, "could not be decoded"), b"", (), str(error)))
        return
    for frame, image in zip(frames, images, strict=True):
        context.ocr_counts["read"] += 1
        height, width = image.shape[:2]
        boxes = [box for box in read_text(image)
                 if sum(character.isalnum() for character in box.text) >= MIN_OCR_CHARACTERS]
        where = "pixel data" + (f", frame {frame + 1} of {frames_in_file}"
                                if frames_in_file > 1 else "")
        texts = []
        for box in boxes:
            region = _image_region(box.box, width, height)
            needles = context.matcher.find_in_ocr_text(box.text)
            for needle in needles:
                check = ("burned_in_text_review" if needle.kind == "name_part"
                         else "burned_in_text")
                what = {"identifier": f"holds the source's {needle.attribute}",
                        "staff_name": f"holds the name in the source's {needle.attribute}",
                        "name_part": f"holds a part of the source's {needle.attribute}"}
                context.add(Finding(check, name, f"{where}, text at the {region}",
                                    f"text burned into the image {what[needle.kind]} (value "
                                    "not shown); see the review page", needle.attribute))
            if not needles:
                context.pixel_text.append({"file": name, "frame": frame + 1, "region": region,
                                           "text": box.text})
            texts.append(ReviewText(box.text, needles[0].attribute if needles else "",
                                    box.box))
        unmatched = [text for text in texts if not text.matched]
        if unmatched:
            context.add(Finding("burned_in_text_review", name, where,
                                "text burned into the image matches no identifier of the "
                                "source: read it on the review page (it can be a name the "
                                "header never held)"))
        if texts:
            context.ocr_counts["with_text"] += 1
        if any(text.matched for text in texts):
            context.ocr_counts["matched"] += 1
        reasons = [*reasons_of_file]
        if any(text.matched for text in texts):
            reasons.append("matches an identifier")
        elif texts:
            reasons.append("text found")
        if is_thumbnail and frame == frames[0]:
            reasons.append("series sample")
        if reasons:
            context.review_images.append(ReviewImage(
                staged, frame, series, tuple(reasons),
                thumbnail_png(image, boxes), tuple(texts)))


# ---- session checks --------------------------------------------------------------------------

def check_inventory(context: SessionContext) -> None:
    """Every source file is accounted for once; every staged file is listed and unaltered."""
    manifest = context.manifest
    sources, not_followed = list_source_files(context.dicom_dir)
    expected = {source.relative_to(context.dicom_dir).as_posix() for source in sources}
    expected |= {outcome.source for outcome in not_followed}
    listed: list[str] = [entry["source"] for part in ("files", "skipped", "errors")
                         for entry in manifest[part]]
    for source in sorted(expected - set(listed)):
        context.add(Finding("inventory", shown_source_path(source, context), "",
                            "source file was neither staged nor listed as skipped"))
    for source in sorted({s for s in listed if listed.count(s) > 1}):
        context.add(Finding("inventory", shown_source_path(source, context), "",
                            "source file is listed more than once in the manifest"))
    for entry in manifest["errors"]:
        context.add(Finding("inventory", shown_source_path(entry["source"], context), "",
                            f"could not be staged: {entry['error']}"))
    for entry in manifest["skipped"]:
        if entry["reason"] == "not a DICOM file" and _has_dicom_preamble(
                context.dicom_dir / entry["source"]):
            context.add(Finding("inventory", shown_source_path(entry["source"], context), "",
                                "was skipped as not DICOM but starts like a DICOM file"))
    staged_on_disk = files_below(context.staged_session_dir)
    staged_listed = {entry["staged"] for entry in manifest["files"]}
    for staged in sorted(staged_on_disk - staged_listed):
        context.add(Finding("inventory", shown_staged_path(staged, context), "",
                            "file in the staged folder that staging did not write"))
    for staged in sorted(staged_listed - staged_on_disk):
        context.add(Finding("inventory", shown_staged_path(staged, context), "",
                            "staged file listed in the manifest is missing"))
    if not manifest["files"]:
        context.add(Finding("inventory", "", "", "no DICOM file was staged for this session"))


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def labels_holding_identifiers(context: SessionContext) -> list[tuple[str, Needle]]:
    """(label column, needle) for each label that holds an identifying value."""
    return [(column, needle) for column in ("subject", "session")
            for needle in context.matcher.find(context.labels[column])]


def check_labels(context: SessionContext) -> None:
    """Subject and session labels hold no identifier (an MRN typed as subject label, say)."""
    for column, needle in labels_holding_identifiers(context):
        context.add(Finding("labels", "", f"sessions.tsv column '{column}'",
                            f"the {column} label contains "
                            + ("the source's" if needle.kind == "identifier"
                               else "a part of the source's") + f" {needle.attribute}",
                            needle.attribute))


def check_staged_names(context: SessionContext) -> None:
    """Staged folder and file names (acquisition labels come from SeriesDescription) hold no
    identifier; Flywheel shows them as acquisition and file names."""
    folders = sorted({entry["staged"].split("/", 1)[0] for entry in context.manifest["files"]})
    for folder in folders:
        for needle in context.matcher.find(folder):
            context.add(_leak_finding(needle, shown_staged_path(f"{folder}/", context),
                                      "folder name (the Flywheel acquisition label)"))
    for entry in context.manifest["files"]:
        file_name = entry["staged"].split("/", 1)[-1]
        for needle in context.matcher.find(file_name):
            context.add(_leak_finding(needle, shown_staged_path(entry["staged"], context),
                                      "file name"))


def report_private_tags(context: SessionContext) -> dict[str, Any]:
    """Private creators and element counts; the elements a person must read, with their
    distinct values; a finding when there are any (unless private tags are kept)."""
    creators = [{"creator": creator, "group": group, "elements": count,
                 "files": context.private_creator_files[(creator, group)]}
                for (creator, group), count in sorted(context.private_creators.items())]
    total = sum(context.private_creators.values())
    values_by_key: dict[PrivateKey, list[tuple[str, int]]] = {}
    for (key, value), files in sorted(context.private_values.items()):
        values_by_key.setdefault(key, []).append((value, files))
    review = []
    for key, files in sorted(context.private_review_files.items()):
        creator, group, byte, element_name_, disposition, vr = key
        values = sorted(values_by_key.get(key, []), key=lambda item: (-item[1], item[0]))
        review.append({
            "creator": creator, "group": group, "element": f"({group},xx{byte})",
            "name": element_name_, "vr": vr, "knowledge_base": disposition, "files": files,
            "values": [{"value": value, "files": count}
                       for value, count in values[:MAX_PRIVATE_VALUES]],
            "more_values": max(0, len(values) - MAX_PRIVATE_VALUES),
            "values_withheld": context.private_withheld[key]})
    distinct_values = sum(len(entry["values"]) + entry["more_values"] for entry in review)
    withheld = sum(entry["values_withheld"] for entry in review)
    if review:
        message = (f"{len(review)} private element(s) that TCIA's knowledge base does not know "
                   "to be safe hold text")
        if distinct_values:
            message += (f": {distinct_values} distinct value(s) to read in the report's list of "
                        "private elements")
        if withheld:
            message += (f"; the values in {withheld} file(s) are not shown there because "
                        "they hold an identifier (see the identifier findings)")
        safe = total - context.private_verdicts["review"]
        message += (f". The other {safe} of {total} private element(s) are known to be safe "
                    "or hold no text")
        context.add(Finding("private_tags", "", "private tags", message))
    policy = {"off": "keep"}.get(context.severities["private_tags"],
                                 context.severities["private_tags"])
    return {"policy": policy, "elements": total,
            "known_safe": context.private_verdicts["known_safe"],
            "no_text": context.private_verdicts["no_text"],
            "to_review": context.private_verdicts["review"],
            "knowledge_base": load_knowledge_base().describe(),
            "creators": creators, "review": review}


# ---- showing paths without identifiers -------------------------------------------------------

def shown_source_path(source: str, context: SessionContext) -> str:
    """The source file's relative path for a report, unless the path holds an identifier."""
    return WITHHELD if context.matcher.find(source) else source


def shown_staged_path(staged: str, context: SessionContext) -> str:
    """A staged path for a report, with a folder or file name holding an identifier hidden."""
    folder, _, file_name = staged.rpartition("/")
    shown_folder = "(folder name withheld: holds an identifier)" if (
        folder and context.matcher.find(folder)) else folder
    shown_file = "(file name withheld: holds an identifier)" if (
        file_name and context.matcher.find(file_name)) else file_name
    return f"{shown_folder}/{shown_file}" if folder else shown_file


# ---- the session -----------------------------------------------------------------------------

def verify_file(entry: dict[str, Any], context: SessionContext) -> None:
    """All file checks on one staged file."""
    name = shown_staged_path(entry["staged"], context)
    staged_path = context.staged_session_dir / entry["staged"]
    if not staged_path.is_file():
        return  # reported by the inventory check
    data = staged_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        context.add(Finding("inventory", name, "", "staged file changed after staging "
                            "(sha256 differs from the manifest)"))
    staged_read = read_staged(data)
    dataset, problem = staged_read.dataset, staged_read.problem
    if problem:
        context.add(Finding("integrity", name, "", problem))
    source_file = shown_source_path(entry["source"], context)
    first_finding = len(context.findings)
    places_found: set[tuple[str, str]] = set()
    if dataset is not None:
        source_path = context.dicom_dir / entry["source"]
        source = SourceHeader(source_path, *_read_source_header(source_path))
        try:
            tally_changes(dataset, staged_read, source.dataset, name, context)
        except READ_ERRORS as error:  # a damaged source element
            source.dataset = None
            context.add(Finding("integrity", name, "", "the source file's header cannot be "
                                f"read ({type(error).__name__}); pixel data and attribute "
                                "changes were not compared"))
        check_profile_actions(dataset, name, context)
        check_deidentification_method(dataset, name, context)
        places_found = scan_elements(dataset, name, context)
        scan_document(dataset, name, context)
        check_patient_age(dataset, name, context)
        if not problem:
            try:
                check_integrity(dataset, staged_read, data, source, name, context)
            except READ_ERRORS as error:
                context.add(Finding("integrity", name, "", "the pixel data could not be "
                                    f"compared with the source's ({type(error).__name__})"))
        at_risk = check_burned_in(dataset, name, context)
        if not problem:
            read_burned_in_text(dataset, entry["staged"], name, at_risk, context)
        for tag, action in populated_basic_profile_tags(dataset):
            context.basic_profile[(tag, action)] += 1
    scan_raw_bytes(data, staged_read, name, places_found, context)
    for finding in context.findings[first_finding:]:
        finding.source_file = source_file


# ---- files in worker processes (deidpipe.parallel) --------------------------------------------
# Each file's checks tally into a fresh copy of these fields of the session's context; the
# job's process adds them up in manifest order, so the report does not depend on the workers.
COUNTED_TALLIES = ("private_creators", "private_creator_files", "free_text", "basic_profile",
                   "changes", "private_verdicts", "private_review_files", "private_values",
                   "private_withheld")
COUNTED_TALLIES = (*COUNTED_TALLIES, "ocr_counts")
LISTED_TALLIES = ("findings", "burned_in_flags", "documents", "pixel_text")
TALLIES = ("free_text_withheld", "phi_rows", "review_images", *LISTED_TALLIES,
           *COUNTED_TALLIES)
_worker_extra_keywords: tuple[str, ...] = ()
_worker_context: SessionContext | None = None


def _start_identifier_worker(extra_keywords: tuple[str, ...]) -> None:
    global _worker_extra_keywords
    _worker_extra_keywords = extra_keywords


def _identifiers_of_source(path: str) -> tuple[IdentifierSet, ImageInfo | None]:
    """The identifying values of one source file (kept in memory only, never written), and
    what choosing its images for OCR needs."""
    found = IdentifierSet(_worker_extra_keywords)
    dataset, image_start = _read_source_header(Path(path))
    if dataset is None:
        return found, None
    try:
        found.add_dataset(dataset)
    except READ_ERRORS:
        pass  # a damaged element: the values read before it are kept
    try:
        instance = int(dataset.get("InstanceNumber"))
    except (TypeError, ValueError, READ_ERRORS[0]):
        instance = None
    try:
        info = ImageInfo(str(dataset.get("SeriesInstanceUID", "")), instance, _frames(dataset),
                         has_pixels=image_start < Path(path).stat().st_size)
    except READ_ERRORS:
        info = None
    return found, info


def _start_verify_worker(context: SessionContext) -> None:
    global _worker_context
    _worker_context = context


def _verify_in_worker(entry: dict[str, Any]) -> dict[str, Any]:
    assert _worker_context is not None
    fresh = {spec.name: spec.default_factory() for spec in fields(SessionContext)  # type: ignore[misc]
             if spec.name in TALLIES and spec.name != "phi_rows"}
    file_context = replace(_worker_context, **fresh,
                           phi_rows=None if _worker_context.phi_rows is None else [])
    verify_file(entry, file_context)
    return {name: getattr(file_context, name) for name in TALLIES}


def _merge_tallies(context: SessionContext, tallies: dict[str, Any]) -> None:
    for name in LISTED_TALLIES:
        getattr(context, name).extend(tallies[name])
    # Images whose text matches an identifier are always kept; of the others, enough for
    # the page to show its 500 cards and say that more were left out.
    for image in tallies["review_images"]:
        if "matches an identifier" in image.reasons or (
                len(context.review_images) < MAX_REVIEW_IMAGES):
            context.review_images.append(image)
    if context.phi_rows is not None:
        context.phi_rows.extend(tallies["phi_rows"])
    for name in COUNTED_TALLIES:
        getattr(context, name).update(tallies[name])
    context.free_text_withheld |= tallies["free_text_withheld"]


def verify_session(
    dicom_dir: str | Path,
    staged_session_dir: str | Path,
    manifest_path: str | Path,
    profile_path: str | Path,
    labels: dict[str, str],
    report_path: str | Path,
    settings: dict[str, Any] | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """Run every check on one staged session and write its report; return the report.
    ``threads``: worker processes for the file checks (the report is the same for any number).

    ``settings``: ``checks`` (check -> fail/warn/off), ``identifier_attributes`` (extra
    keywords whose values are identifiers), ``phi_log`` (folder for the before/after value log;
    empty or missing: no log).
    """
    settings = settings or {}
    severities = resolve_severities(settings.get("checks"))
    context = SessionContext(
        dicom_dir=Path(dicom_dir), staged_session_dir=Path(staged_session_dir),
        manifest=read_json(manifest_path), profile=load_profile(profile_path), labels=labels,
        severities=severities,
        identifiers=IdentifierSet(tuple(settings.get("identifier_attributes", ()))))
    source_paths = [str(context.dicom_dir / entry["source"]) for entry in
                    context.manifest["files"]]
    infos = []
    for found, info in map_in_workers(_identifiers_of_source, source_paths, threads,
                                      _start_identifier_worker,
                                      (context.identifiers.extra_keywords,)):
        context.identifiers.merge(found)
        infos.append(info)
    context.matcher = context.identifiers.matcher()
    context.ocr_sample = tuple((settings.get("ocr") or {}).get("sample", OCR_ALL_FRAMES))
    context.ocr_plan = ocr_plan(context.manifest["files"], infos, context.ocr_sample)
    if any(severities[check] != "off" for check in (
            "burned_in_annotation", "burned_in_risk", *OCR_CHECKS)):
        context.burned_in = BurnedInScreen(use_filter_list=severities["burned_in_risk"] != "off")
    phi_log_dir = settings.get("phi_log") or ""
    if phi_log_dir:
        context.phi_rows = []
    check_inventory(context)
    check_labels(context)
    check_staged_names(context)
    for tallies in map_in_workers(_verify_in_worker, context.manifest["files"], threads,
                                  _start_verify_worker, (context,)):
        _merge_tallies(context, tallies)
    private_tags = report_private_tags(context)
    ocr_active = any(context.active(check) for check in OCR_CHECKS)
    review_page = review_page_beside(context.staged_session_dir)
    if ocr_active:
        ocr_counts = {key: context.ocr_counts[key] for key in (
            "images", "frames", "read", "with_text", "matched", "not_decoded")}
        title = "/".join(labels[key] for key in ("group", "project", "subject", "session"))
        write_review_page(review_page, title, context.review_images, ocr_counts)
    status = max((finding.severity for finding in context.findings),
                 key=SEVERITY_ORDER.__getitem__, default="pass")
    counts = context.manifest["counts"]
    # A label found to hold an identifier is not repeated in the report.
    flagged = {column for column, _needle in labels_holding_identifiers(context)}
    shown_labels = {key: (WITHHELD if key in flagged else value) for key, value in labels.items()}
    shown_phi_log = None
    if context.phi_rows is not None:
        # The PHI log holds identifiers anyway, so its path uses the labels as typed; the
        # report names the file only when no label holds an identifier.
        phi_log_path = Path(phi_log_dir).joinpath(
            *(labels[key] for key in ("group", "project", "subject")),
            f"{labels['session']}.tsv")
        write_phi_log(phi_log_path, context.phi_rows)
        shown_phi_log = (str(Path(phi_log_dir)) + " (file name withheld: a label holds an "
                         "identifier)" if flagged else str(phi_log_path))
    findings = [finding.as_dict() for finding in context.findings]
    report = {
        "session": shown_labels,
        "status": status,
        "files": {"staged": counts["staged"], "skipped": counts["skipped"],
                  "errors": counts["error"]},
        "profile": context.manifest["profile"],
        "engine": context.manifest.get("engine", ""),
        "identifier_values_searched": len(context.identifiers.values),
        "identifier_values_too_short_to_search": len(context.identifiers.too_short),
        "checks": {name: {"severity": severities[name],
                          "findings": sum(f.check == name for f in context.findings),
                          "looks_for": check.description}
                   for name, check in CHECKS.items()},
        "findings": findings,
        # The same findings, one entry per kind and place with every file listed: what the
        # report page shows (a name in 2,000 files is one row, not 2,000).
        "finding_groups": group_findings(findings),
        "private_tags": private_tags,
        "burned_in": context.burned_in_flags,
        "ocr": ({"engine": engine_description(), "sample": list(context.ocr_sample),
                 **ocr_counts} if ocr_active else None),
        "pixel_text": context.pixel_text,
        # The review page shows the images as they will be uploaded: it stays in staging.
        "review_page": (None if not ocr_active else WITHHELD if flagged
                        else str(review_page)),
        "documents": context.documents,
        "free_text": [{"attribute": attribute, "tag": tag, "value": value, "files": files}
                      for (attribute, tag, value), files in sorted(context.free_text.items())],
        "free_text_withheld": len(context.free_text_withheld),
        "basic_profile_audit": [
            {"attribute": describe_tag(tag)[0], "tag": describe_tag(tag)[1], "action": action,
             "files": files}
            for (tag, action), files in sorted(context.basic_profile.items())],
        "changes": [{"attribute": describe_tag(tag)[0], "tag": describe_tag(tag)[1],
                     "action": action, "files": files}
                    for (tag, action), files in sorted(context.changes.items())],
        "phi_log": shown_phi_log,
    }
    write_json(report_path, report)
    return report


def write_phi_log(path: Path, rows: list[list[str]]) -> None:
    """The opt-in before/after value log: holds identifiers, so owner-only and never in
    staging or results."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(["staged_file", "attribute", "tag", "action", "before", "after"])
    writer.writerows(rows)
    write_private_bytes(path, buffer.getvalue().encode("utf-8"))


__all__ = ["verify_session", "CHECKS", "resolve_severities", "WITHHELD"]
