"""The checks run on each staged file (against its source and the profile)."""

import hashlib
import re
from bisect import bisect_right
from functools import lru_cache
from pathlib import Path

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from deidpipe.basic_profile import describe_tag, populated_basic_profile_tags
from deidpipe.dicom.reader import FIRST_IMAGE_DATA_TAG, IMAGE_DATA_TAGS, PREAMBLE_BYTES, mapped
from deidpipe.identifiers import (
    Needle,
    is_short_number,
)
from deidpipe.manifest import StagedFile
from deidpipe.private_knowledge import load_knowledge_base
from deidpipe.verification.context import SessionContext, shown_source_path, shown_staged_path
from deidpipe.verification.ocr_checks import read_burned_in_text
from deidpipe.verification.reading import (
    READ_ERRORS,
    SourceHeader,
    frame_count,
    read_source,
    read_source_header,
    read_staged,
)
from deidpipe.verification.registry import (
    FREE_TEXT_KEYWORDS,
    FREE_TEXT_VRS,
    LEAK_CHECK_OF_KIND,
    MAX_PRIVATE_VALUE,
    NUMERIC_VRS,
    SAFE_DISPOSITION,
    TEXT_VRS,
    Finding,
    PrivateKey,
)
from deidpipe.verification.view import FileView, Leaf, element_name, element_text

COMPARE_CHUNK = 1 << 20
DEIDENTIFICATION_METHOD, PATIENT_AGE = 0x00120063, 0x00101010
ENCAPSULATED_DOCUMENT = 0x00420011


def check_profile_actions(view: FileView, name: str, context: SessionContext) -> None:
    """Every profile action holds: replaced values equal their replacement, removed are absent."""
    for profile_field in context.profile.fields:
        keyword = profile_field["name"]
        tag = _tag_of_keyword(keyword)
        present = tag is not None and tag in view
        if profile_field.get("remove"):
            if present:
                context.add(Finding("profile_actions", name, element_name(view.element(tag)),
                                    f"{keyword} should have been removed but is present"))
            continue
        replacement = str(profile_field.get("replace-with", ""))
        if not present:
            context.add(Finding("profile_actions", name, keyword,
                                f"{keyword} should be present (set to the profile's value) "
                                "but is missing"))
        elif not (view.is_empty(tag) if replacement == ""
                  else _value_equals(view.element(tag), replacement)):
            what = "empty" if replacement == "" else "the profile's replacement"
            context.add(Finding("profile_actions", name, element_name(view.element(tag)),
                                f"{keyword} should be {what} but holds another value"))


@lru_cache(maxsize=4096)
def _tag_of_keyword(keyword: str) -> int | None:
    return tag_for_keyword(keyword)


def _value_equals(element: DataElement, replacement: str) -> bool:
    """VR-aware comparison of an element's value with a profile's replacement text (not
    empty)."""
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


def check_deidentification_method(view: FileView, name: str, context: SessionContext) -> None:
    """DeidentificationMethod names the profile's version, so anyone can see what was applied."""
    value = str(view.value(DEIDENTIFICATION_METHOD, "") or "")
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


def check_patient_age(view: FileView, name: str, context: SessionContext) -> None:
    """No staged PatientAge (at any depth) is 90 years or more, whatever unit it is in."""
    if not context.active("patient_age"):
        return
    for leaf in view.leaves():
        if leaf.tag != PATIENT_AGE or leaf.info.empty:
            continue
        years = age_in_years(str(leaf.element.value))
        if years is not None and years >= OLDEST_AGE_SHOWN + 1:
            context.add(Finding("patient_age", name, leaf.path,
                                "PatientAge is 90 years or more (value not shown): HIPAA "
                                "Safe Harbor counts ages over 89 as identifiers; empty "
                                "PatientAge in the profile, or set it to 90Y for such "
                                "patients"))


def scan_elements(view: FileView, name: str, context: SessionContext
                  ) -> set[tuple[str, str]]:
    """Leak scan of every element (file meta, sequences, private tags, elements after the
    pixel data); tally private tags and free text on the way. Returns the (source attribute,
    tag path) pairs found, so that the byte scan does not report them again."""
    leaves = view.leaves()
    texts = [leaf.info.text for leaf in leaves]
    numeric = {index for index, leaf in enumerate(leaves) if leaf.info.vr in NUMERIC_VRS}
    found = context.matcher.find_each(texts, numeric)
    places_found = set()
    for index, needles in sorted(found.items()):
        path = leaves[index].path
        for needle in needles:
            places_found.add((needle.attribute, path))
            context.add(leak_finding(needle, name, path))
    creators_in_file: set[tuple[str, str]] = set()
    free_text_in_file: set[tuple[str, str, str]] = set()
    private_in_file: set[PrivateKey] = set()
    private_values_in_file: set[tuple[PrivateKey, str]] = set()
    for index, leaf in enumerate(leaves):
        element = leaf.element
        if leaf.tag >> 16 & 1 and leaf.tag & 0xFFFF >= 0x1000:
            creator = (element.private_creator or "(no private creator)",
                       f"{element.tag.group:04X}")
            context.private_creators[creator] += 1
            creators_in_file.add(creator)
            key = judge_private_element(leaf, texts[index], context)
            if key is not None:
                private_in_file.add(key)
                if index in found:
                    context.private_withheld[key] += 1
                else:
                    private_values_in_file.add((key, _shown_private_value(texts[index])))
        if texts[index].strip() and (leaf.info.keyword in FREE_TEXT_KEYWORDS
                                     or leaf.info.vr in FREE_TEXT_VRS):
            attribute = leaf.info.keyword or leaf.info.name
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


def judge_private_element(leaf: Leaf, text: str, context: SessionContext
                          ) -> PrivateKey | None:
    """Tally what TCIA's knowledge base says of a private element; return its key when a
    person must read it (not known to be safe, and it holds text)."""
    element = leaf.element
    info = load_knowledge_base().lookup(leaf.segments)
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


def scan_document(view: FileView, name: str, context: SessionContext) -> None:
    """An encapsulated document (PDF, CDA...): its text, inflated and decoded, goes through
    the matcher; the document is listed for a person to read either way, because a scanned
    form is an image inside the PDF that no text scan sees."""
    if ENCAPSULATED_DOCUMENT not in view:
        return
    # Imported here: pypdf takes a tenth of a second to import, and few sessions hold documents.
    from deidpipe.documents import document_text

    document = document_text(view.dataset())
    if document is None:
        return
    place = f"EncapsulatedDocument (0042,0011) > {document.kind}"
    found = context.matcher.find_in_texts([text for _where, text in document.texts])
    for index, needles in sorted(found.items()):
        for needle in needles:
            context.add(leak_finding(needle, name, f"{place} {document.texts[index][0]}"))
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


def leak_finding(needle: Needle, name: str, where: str) -> Finding:
    what = {"identifier": f"holds the source's {needle.attribute}",
            "name_part": f"holds a part of the source's {needle.attribute}",
            "staff_name": f"holds the name in the source's {needle.attribute}"}[needle.kind]
    return Finding(LEAK_CHECK_OF_KIND[needle.kind], name, where, f"{what} (value not shown)",
                   needle.attribute)


def scan_raw_bytes(data: bytes, view: FileView, name: str,
                   places_found: set[tuple[str, str]], context: SessionContext) -> None:
    """Search the staged file's bytes. A hit inside an element's value is that element's
    (reported at its tag path, under the element scan's rules: no short numbers in numeric
    values, nothing the element scan already reported there); only bytes no parsed element
    holds (the preamble, data after the pixel data or between elements that cannot be
    parsed) are reported as raw bytes."""
    hits = _find_outside_pixels(data, view.native_pixels, context)
    if not hits:
        return
    spans = view.spans()
    starts = [span.start for span in spans]
    reported = set(places_found)
    for needle, offset in hits:
        index = bisect_right(starts, offset) - 1
        span = spans[index] if index >= 0 else None
        if span is not None and offset < span.end:
            if is_short_number(needle.folded) and span.info.vr in NUMERIC_VRS:
                continue  # a measurement or UID component, as in the element scan
            where = span.path
        else:
            where = _unowned_place(offset, view.image_end)
        if (needle.attribute, where) not in reported:
            reported.add((needle.attribute, where))
            context.add(leak_finding(needle, name, where))


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


def check_integrity(staged: FileView, staged_data: bytes, source: SourceHeader, name: str,
                    context: SessionContext) -> None:
    """Pixel data byte-identical to the source's; same number of frames.

    Staging copies everything from the image data on as it is, so the two files' bytes from
    there to the end are compared first; only when they differ (a source stored deflated,
    or a real difference) are both files' image data elements read and compared one by one.
    """
    if source.view is None:
        return
    staged_start = staged.image_start if staged.image_start is not None else len(staged_data)
    if not _same_bytes_from(staged_data, staged_start, source.path, source.image_start):
        whole_source = read_source(source.path)
        if whole_source is None:
            context.add(Finding("integrity", name, "", "the pixel data could not be compared "
                                "with the source's (the source cannot be read to its end)"))
        else:
            _compare_image_data(staged.dataset(), whole_source, name, context)
    if frame_count(source.view) != frame_count(staged):
        context.add(Finding("integrity", name, "NumberOfFrames (0028,0008)",
                            f"{frame_count(staged)} frame(s) staged, the source has "
                            f"{frame_count(source.view)}"))


def _same_bytes_from(staged_data: bytes, staged_start: int, source_path: Path,
                     source_start: int) -> bool:
    # Slices of bytes and of the mapped source compare with memcmp (a memoryview compares
    # byte by byte); chunks keep the copies small for large files.
    with open(source_path, "rb") as handle, mapped(handle) as source:
        length = len(staged_data) - staged_start
        if len(source) - source_start != length:
            return False
        for offset in range(0, length, COMPARE_CHUNK):
            if (staged_data[staged_start + offset:staged_start + offset + COMPARE_CHUNK]
                    != source[source_start + offset:source_start + offset + COMPARE_CHUNK]):
                return False
    return True


def _compare_image_data(staged: Dataset, source: Dataset, name: str,
                        context: SessionContext) -> None:
    for tag in IMAGE_DATA_TAGS:
        in_source, in_staged = tag in source, tag in staged
        if in_source != in_staged:
            context.add(Finding("integrity", name, describe_tag(tag)[1],
                                "pixel data " + ("is missing from the staged file" if in_source
                                                 else "was added by staging")))
        elif in_source and source.get_item(tag).value != staged.get_item(tag).value:
            context.add(Finding("integrity", name, f"{describe_tag(tag)[0]} "
                                f"{describe_tag(tag)[1]}",
                                "pixel data differs from the source's"))


def tally_changes(staged: FileView, source: FileView | None, name: str,
                  context: SessionContext) -> None:
    """Count what staging did to each top-level attribute before the image data (values go
    to the PHI log only). Elements whose stored bytes are unchanged are not converted."""
    if source is None:
        return
    source_tags, staged_tags = set(source.tags), set(staged.tags)
    for tag in sorted(source_tags | staged_tags):
        if tag >= FIRST_IMAGE_DATA_TAG:
            break  # the image data and what follows are compared as bytes (integrity)
        if tag in source_tags and tag in staged_tags:
            action = _change(staged, source, tag)
            if action is None:
                continue
        elif tag in staged_tags:
            action = "added" if staged.element(tag).value else "added (empty)"
        else:
            action = "removed"
        context.changes[(tag, action)] += 1
        if context.phi_rows is not None:
            keyword, tag_text = describe_tag(tag)
            context.phi_rows.append([name, keyword, tag_text, action,
                                     _logged_value(source, tag), _logged_value(staged, tag)])


# (tag, source's stored sequence, staged stored sequence) -> what staging did to it: a
# series' files share their sequences, and comparing two sequences converts both whole.
_sequence_changes: dict[tuple[object, ...], str | None] = {}
SEQUENCE_CHANGES_KEPT = 10_000


def _change(staged: FileView, source: FileView, tag: int) -> str | None:
    """What staging did to an attribute both files hold: None (unchanged), 'replaced' or
    'emptied'."""
    source_key, staged_key = source.raw_key(tag), staged.raw_key(tag)
    if source_key is not None and source_key == staged_key:
        return None
    memo_key = None
    if isinstance(source_key, tuple) and isinstance(staged_key, tuple):
        memo_key = (tag, source_key, staged_key)
        if memo_key in _sequence_changes:
            return _sequence_changes[memo_key]
    after_value = staged.element(tag).value
    action = (None if source.element(tag).value == after_value
              else "replaced" if after_value else "emptied")
    if memo_key is not None and len(_sequence_changes) < SEQUENCE_CHANGES_KEPT:
        _sequence_changes[memo_key] = action
    return action


def _logged_value(view: FileView, tag: int) -> str:
    if tag not in view:
        return ""
    try:
        return element_text(view.element(tag))
    except READ_ERRORS:
        return "(cannot be read)"


def check_burned_in(view: FileView, name: str, context: SessionContext) -> bool:
    """Flag images of classes where text is often burned in; True if this one is such."""
    if context.burned_in is None:
        return False
    header = view.header()
    flags = context.burned_in.flags(header)
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
    return bool(flags) or context.burned_in.is_risky_class(header)


# ---- the session -----------------------------------------------------------------------------

def verify_file(entry: StagedFile, context: SessionContext) -> None:
    """All file checks on one staged file."""
    name = shown_staged_path(entry.staged, context)
    staged_path = context.staged_session_dir / entry.staged
    if not staged_path.is_file():
        return  # reported by the inventory check
    data = staged_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        context.add(Finding("inventory", name, "", "staged file changed after staging "
                            "(sha256 differs from the manifest)"))
    view = read_staged(data)
    problem = view.problem
    if problem:
        context.add(Finding("integrity", name, "", problem))
    source_file = shown_source_path(entry.source, context)
    first_finding = len(context.findings)
    places_found: set[tuple[str, str]] = set()
    if view.readable:
        source_path = context.dicom_dir / entry.source
        source = SourceHeader(source_path, *read_source_header(source_path))
        try:
            tally_changes(view, source.view, name, context)
        except READ_ERRORS as error:  # a damaged source element
            source.view = None
            context.add(Finding("integrity", name, "", "the source file's header cannot be "
                                f"read ({type(error).__name__}); pixel data and attribute "
                                "changes were not compared"))
        check_profile_actions(view, name, context)
        check_deidentification_method(view, name, context)
        places_found = scan_elements(view, name, context)
        scan_document(view, name, context)
        check_patient_age(view, name, context)
        if not problem:
            try:
                check_integrity(view, data, source, name, context)
            except READ_ERRORS as error:
                context.add(Finding("integrity", name, "", "the pixel data could not be "
                                    f"compared with the source's ({type(error).__name__})"))
        at_risk = check_burned_in(view, name, context)
        if not problem:
            read_burned_in_text(view, entry.staged, name, at_risk, context)
        for tag, action in populated_basic_profile_tags(view.tags, view.is_empty):
            context.basic_profile[(tag, action)] += 1
    scan_raw_bytes(data, view, name, places_found, context)
    for finding in context.findings[first_finding:]:
        finding.source_file = source_file
