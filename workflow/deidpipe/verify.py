"""Verify one staged session before anything is uploaded; write the report as JSON.

Each check is a small function listed in ``FILE_CHECKS`` or ``SESSION_CHECKS`` with its
severity, which verify_session gives to its findings. File checks take (staged dataset, staged
file name, context) and return findings; session checks take the context. A finding names
the file, the tag path and, for leaks, which source attribute matched: never the value.
"""

import hashlib
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from deidpipe.files import files_below, read_json, write_json
from deidpipe.profile import Profile, load_profile
from deidpipe.stage import list_source_files

# Source attributes whose values must not survive staging anywhere (issue contract, check 4).
IDENTIFYING_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "OtherPatientIDs",
    "OtherPatientNames", "PatientAddress", "PatientTelephoneNumbers",
    "ReferringPhysicianName", "PerformingPhysicianName",
)
# Values with fewer letters and digits than this are not searched: "1" or "--" would match
# everywhere and mean nothing. The report counts how many were left out.
MIN_SEARCHABLE_CHARACTERS = 3
WITHHELD = "(withheld: holds an identifier)"
SEVERITY_ORDER = {"pass": 0, "warn": 1, "fail": 2}
PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
NON_ALNUM = re.compile(r"[^0-9a-z]+")


@dataclass
class Finding:
    check: str
    file: str
    tag: str
    message: str
    source_attribute: str = ""
    source_file: str = ""
    severity: str = ""  # set from the check's registry entry

    def as_dict(self) -> dict[str, str]:
        found = {"check": self.check, "severity": self.severity, "file": self.file,
                 "tag": self.tag, "message": self.message}
        if self.source_attribute:
            found["source_attribute"] = self.source_attribute
        if self.source_file:
            found["source_file"] = self.source_file
        return found


@dataclass
class SessionContext:
    """What the checks of one session need to know."""

    dicom_dir: Path
    staged_session_dir: Path
    manifest: dict[str, Any]
    profile: Profile
    labels: dict[str, str]
    # normalised identifier value -> source attribute it came from (values never leave memory)
    identifiers: dict[str, str] = field(default_factory=dict)
    # Person-name components ('testperson', 'alice'): used to decide what a report may show.
    name_parts: set[str] = field(default_factory=set)
    # Distinct values too short to search (counted in the report, never written).
    too_short_to_search: set[str] = field(default_factory=set)


def normalise(text: str) -> str:
    """Case, separators and whitespace folded: 'Doe^John' and 'DOE, JOHN' both become 'doejohn'.

    Folding separators away also matches identifiers written with or without them
    ('MRN-123-45' and 'MRN12345').
    """
    return NON_ALNUM.sub("", text.casefold())


def matched_attributes(folded_text: str, context: SessionContext) -> list[str]:
    """Source attributes whose (normalised) identifying value occurs in ``folded_text``."""
    return [attribute for needle, attribute in context.identifiers.items()
            if needle in folded_text]


def element_path(parents: list[str], element: DataElement) -> str:
    """A tag path people can read: 'RequestAttributesSequence (0040,0275) item 1 > ...'."""
    name = element.keyword or (f"private tag [{element.private_creator}]"
                               if element.tag.is_private and element.private_creator
                               else "private tag" if element.tag.is_private else "unknown tag")
    here = f"{name} ({element.tag.group:04X},{element.tag.element:04X})"
    return " > ".join([*parents, here])


def walk_text(dataset: Dataset, parents: list[str] | None = None
              ) -> Iterator[tuple[str, str]]:
    """Every element's value as text, depth first, sequences and private tags included.

    Binary values (OB/UN/OW...) are decoded as Latin-1 so that text hidden in them is seen;
    pixel data is skipped.
    """
    parents = parents or []
    for element in dataset:
        if int(element.tag) in PIXEL_TAGS:
            continue
        if element.VR == "SQ":
            path = element_path(parents, element)
            for number, item in enumerate(element.value or [], start=1):
                yield from walk_text(item, [*parents, f"{path} item {number}"])
            continue
        value = element.value
        if value is None:
            continue
        if isinstance(value, bytes):
            text = value.decode("latin-1")
        elif isinstance(value, MultiValue | list | tuple):
            text = "\\".join(str(part) for part in value)
        else:
            text = str(value)
        yield element_path(parents, element), text


def collect_identifiers(source: Path, context: SessionContext) -> None:
    """Add the identifying values of one source file to the context (kept in memory only)."""
    try:
        dataset = dcmread(source, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return  # staging already listed this file as an error
    for keyword in IDENTIFYING_KEYWORDS:
        element = dataset.data_element(keyword) if keyword in dataset else None
        if element is None or element.value in (None, ""):
            continue
        values = element.value if isinstance(element.value, MultiValue) else [element.value]
        for value in values:
            if element.VR == "PN":
                context.name_parts.update(
                    part for part in map(normalise, re.split(r"[\^=\s,]+", str(value)))
                    if len(part) >= MIN_SEARCHABLE_CHARACTERS)
            normalised = normalise(str(value))
            if len(normalised) >= MIN_SEARCHABLE_CHARACTERS:
                context.identifiers.setdefault(normalised, keyword)
            else:
                context.too_short_to_search.add(normalised)


# ---- file checks: (staged dataset, staged file name, context) -> findings --------------------

def check_profile_actions(dataset: Dataset, name: str, context: SessionContext) -> list[Finding]:
    """Every profile action holds: replaced values equal their replacement, removed are absent."""
    findings = []
    for profile_field in context.profile.fields:
        keyword = profile_field["name"]
        element = dataset.data_element(keyword) if keyword in dataset else None
        if profile_field.get("remove"):
            if element is not None:
                findings.append(Finding("profile_actions", name, element_path([], element),
                                        f"{keyword} should have been removed but is present"))
            continue
        replacement = str(profile_field.get("replace-with", ""))
        if element is None:
            findings.append(Finding("profile_actions", name, keyword,
                                    f"{keyword} should be present (set to the profile's value) "
                                    "but is missing"))
        elif not _value_equals(element, replacement):
            what = "empty" if replacement == "" else "the profile's replacement"
            findings.append(Finding("profile_actions", name, element_path([], element),
                                    f"{keyword} should be {what} but holds another value"))
    return findings


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


def check_deidentification_method(dataset: Dataset, name: str,
                                  context: SessionContext) -> list[Finding]:
    """DeidentificationMethod names the profile's version, so anyone can see what was applied."""
    value = str(dataset.get("DeidentificationMethod", "") or "")
    if value == context.profile.version:
        return []
    return [Finding("deidentification_method", name,
                    "DeidentificationMethod (0012,0063)",
                    f"DeidentificationMethod should be '{context.profile.version}'"
                    + (" but is missing" if not value else " but holds another value"))]


def check_identifier_leak(dataset: Dataset, name: str, context: SessionContext) -> list[Finding]:
    """No identifying source value appears in any element, private tags and sequences included."""
    if not context.identifiers:
        return []
    findings = []
    for path, text in walk_text(dataset):
        for source_attribute in matched_attributes(normalise(text), context):
            findings.append(Finding(
                "identifier_leak", name, path,
                f"holds the source's {source_attribute} (value not shown)", source_attribute))
    return findings


# ---- session checks: context -> findings ------------------------------------------------------

def check_inventory(context: SessionContext) -> list[Finding]:
    """Every source file is accounted for once; every staged file is listed and unaltered."""
    findings = []
    manifest = context.manifest
    sources, not_followed = list_source_files(context.dicom_dir)
    expected = {source.relative_to(context.dicom_dir).as_posix() for source in sources}
    expected |= {outcome.source for outcome in not_followed}
    listed: list[str] = [entry["source"] for part in ("files", "skipped", "errors")
                         for entry in manifest[part]]
    for source in sorted(expected - set(listed)):
        findings.append(Finding("inventory", source, "",
                                "source file was neither staged nor listed as skipped"))
    for source in sorted({s for s in listed if listed.count(s) > 1}):
        findings.append(Finding("inventory", source, "",
                                "source file is listed more than once in the manifest"))
    for entry in manifest["errors"]:
        findings.append(Finding("inventory", entry["source"], "",
                                f"could not be staged: {entry['error']}"))
    for entry in manifest["skipped"]:
        if entry["reason"] == "not a DICOM file" and _has_dicom_preamble(
                context.dicom_dir / entry["source"]):
            findings.append(Finding("inventory", entry["source"], "",
                                    "was skipped as not DICOM but starts like a DICOM file"))
    staged_on_disk = files_below(context.staged_session_dir)
    staged_listed = {entry["staged"] for entry in manifest["files"]}
    for staged in sorted(staged_on_disk - staged_listed):
        findings.append(Finding("inventory", staged, "",
                                "file in the staged folder that staging did not write"))
    for staged in sorted(staged_listed - staged_on_disk):
        findings.append(Finding("inventory", staged, "",
                                "staged file listed in the manifest is missing"))
    if not manifest["files"]:
        findings.append(Finding("inventory", "", "",
                                "no DICOM file was staged for this session"))
    return findings


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def labels_holding_identifiers(context: SessionContext) -> list[tuple[str, str]]:
    """(label column, source attribute) for each label that holds an identifying value."""
    return [(column, attribute) for column in ("subject", "session")
            for attribute in matched_attributes(normalise(context.labels[column]), context)]


def check_labels(context: SessionContext) -> list[Finding]:
    """Subject and session labels hold no identifier (an MRN typed as subject label, say)."""
    return [Finding("labels", "", f"sessions.tsv column '{column}'",
                    f"the {column} label contains the source's {attribute}", attribute)
            for column, attribute in labels_holding_identifiers(context)]


FileCheck = Callable[[Dataset, str, SessionContext], list[Finding]]
SessionCheck = Callable[[SessionContext], list[Finding]]
FILE_CHECKS: dict[str, tuple[FileCheck, str]] = {
    "profile_actions": (check_profile_actions, "fail"),
    "deidentification_method": (check_deidentification_method, "fail"),
    "identifier_leak": (check_identifier_leak, "fail"),
}
SESSION_CHECKS: dict[str, tuple[SessionCheck, str]] = {
    "inventory": (check_inventory, "fail"),
    "labels": (check_labels, "fail"),
}
SEVERITY_OF_CHECK = {name: severity for name, (_check, severity)
                     in {**SESSION_CHECKS, **FILE_CHECKS}.items()}


def shown_source_path(source: str, context: SessionContext) -> str:
    """The source file's relative path for a report, unless the path holds an identifier."""
    folded = normalise(source)
    if matched_attributes(folded, context) or any(part in folded for part in context.name_parts):
        return WITHHELD
    return source


def _read_staged(path: Path, expected_sha256: str) -> tuple[Dataset | None, list[str]]:
    """Read a staged file once: hash its bytes and parse them."""
    data = path.read_bytes()
    problems = []
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        problems.append("staged file changed after staging (sha256 differs from the manifest)")
    try:
        return dcmread(io.BytesIO(data)), problems
    except (InvalidDicomError, ValueError, EOFError) as error:
        return None, [*problems, f"staged file cannot be read as DICOM ({type(error).__name__})"]


def verify_session(
    dicom_dir: str | Path,
    staged_session_dir: str | Path,
    manifest_path: str | Path,
    profile_path: str | Path,
    labels: dict[str, str],
    report_path: str | Path,
) -> dict[str, Any]:
    """Run every check on one staged session and write its report; return the report."""
    context = SessionContext(
        dicom_dir=Path(dicom_dir), staged_session_dir=Path(staged_session_dir),
        manifest=read_json(manifest_path), profile=load_profile(profile_path), labels=labels)
    for entry in context.manifest["files"]:
        collect_identifiers(context.dicom_dir / entry["source"], context)
    findings: list[Finding] = []
    for check, _severity in SESSION_CHECKS.values():
        findings.extend(check(context))
    for entry in context.manifest["files"]:
        staged_path = context.staged_session_dir / entry["staged"]
        if not staged_path.is_file():
            continue  # reported by the inventory check
        dataset, problems = _read_staged(staged_path, entry["sha256"])
        findings.extend(Finding("inventory", entry["staged"], "", problem)
                        for problem in problems)
        if dataset is None:
            continue
        source_file = shown_source_path(entry["source"], context)
        for check, _severity in FILE_CHECKS.values():
            for finding in check(dataset, entry["staged"], context):
                finding.source_file = source_file
                findings.append(finding)
    for finding in findings:
        finding.severity = SEVERITY_OF_CHECK[finding.check]
    status = max((finding.severity for finding in findings), key=SEVERITY_ORDER.__getitem__,
                 default="pass")
    counts = context.manifest["counts"]
    # A label found to hold an identifier is not repeated in the report.
    flagged = {column for column, _attribute in labels_holding_identifiers(context)}
    shown_labels = {key: (WITHHELD if key in flagged else value) for key, value in labels.items()}
    report = {
        "session": shown_labels,
        "status": status,
        "files": {"staged": counts["staged"], "skipped": counts["skipped"],
                  "errors": counts["error"]},
        "profile": context.manifest["profile"],
        "identifier_values_searched": len(context.identifiers),
        "identifier_values_too_short_to_search": len(context.too_short_to_search),
        "checks": {name: {"default_severity": severity,
                          "findings": sum(f.check == name for f in findings)}
                   for name, severity in SEVERITY_OF_CHECK.items()},
        "findings": [finding.as_dict() for finding in findings],
    }
    write_json(report_path, report)
    return report


__all__ = ["verify_session", "FILE_CHECKS", "SESSION_CHECKS", "normalise"]
