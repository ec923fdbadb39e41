"""What the checks of one session know and tally (``SessionContext``), and how paths are shown
without the identifiers they may hold."""

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deidpipe.burned_in import BurnedInScreen
from deidpipe.identifiers import (
    IdentifierSet,
    Matcher,
)
from deidpipe.manifest import Manifest
from deidpipe.profile import Profile
from deidpipe.review import ReviewImage
from deidpipe.verification.registry import WITHHELD, Finding, PrivateKey


@dataclass
class SessionContext:
    """What the checks of one session need to know, and what they tally for the report."""

    dicom_dir: Path
    staged_session_dir: Path
    manifest: Manifest
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
