"""The checks verification runs, declared once (default severity, what each looks for), and
the finding each writes."""

from dataclasses import dataclass

from deidpipe.errors import PipelineError

WITHHELD = "(withheld: holds an identifier)"
SEVERITY_ORDER = {"pass": 0, "warn": 1, "fail": 2}




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
