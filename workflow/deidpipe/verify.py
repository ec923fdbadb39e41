"""Verify one staged session before anything is uploaded; write the report as JSON.

Checks are listed in ``CHECKS`` with their default severity; the config may set each to
``fail``, ``warn`` or ``off`` (``inventory`` is always ``fail``: an incomplete session is
never uploaded). A finding names the file, the tag path and, for leaks, which source attribute
matched: never the value. Besides findings the report carries what a person reviews: private
creators, burned-in flags, distinct free-text values, the Basic Profile audit and the
attribute changes staging made.
"""

import csv
import io
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from deidpipe.burned_in import BurnedInScreen
from deidpipe.files import write_json, write_private_bytes
from deidpipe.identifiers import (
    IdentifierSet,
)
from deidpipe.manifest import StagedFile, read_manifest
from deidpipe.ocr import load_engines
from deidpipe.parallel import map_in_workers
from deidpipe.paths import review_page_beside
from deidpipe.profile import load_profile
from deidpipe.review import write_review_page
from deidpipe.verification.context import SessionContext
from deidpipe.verification.file_checks import verify_file
from deidpipe.verification.ocr_checks import (
    MAX_REVIEW_IMAGES,
    OCR_ALL_FRAMES,
    OCR_CHECKS,
    ImageInfo,
    ocr_plan,
)
from deidpipe.verification.reading import READ_ERRORS, frame_count, read_source_header
from deidpipe.verification.registry import resolve_severities
from deidpipe.verification.report_json import session_report
from deidpipe.verification.session_checks import (
    check_inventory,
    check_labels,
    check_staged_names,
    labels_holding_identifiers,
)

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
INSTANCE_NUMBER, SERIES_INSTANCE_UID = 0x00200013, 0x0020000E
_worker_context: SessionContext | None = None


def _start_identifier_worker(extra_keywords: tuple[str, ...]) -> None:
    global _worker_extra_keywords
    _worker_extra_keywords = extra_keywords


def _identifiers_of_source(path: str) -> tuple[IdentifierSet, ImageInfo | None]:
    """The identifying values of one source file (kept in memory only, never written), and
    what choosing its images for OCR needs."""
    found = IdentifierSet(_worker_extra_keywords)
    view, image_start = read_source_header(Path(path))
    if view is None:
        return found, None
    try:
        # The data set's elements (not the file meta's: group 0002 at the top).
        found.add_elements((leaf.level.parents, leaf.element)
                           for leaf in view.iter_leaves(found.may_identify)
                           if leaf.level.route or leaf.tag >> 16 != 0x0002)
    except READ_ERRORS:
        pass  # a damaged element: the values read before it are kept
    try:
        instance = int(view.value(INSTANCE_NUMBER))  # type: ignore[call-overload]
    except (TypeError, ValueError, READ_ERRORS[0]):
        instance = None
    try:
        info = ImageInfo(str(view.value(SERIES_INSTANCE_UID, "")), instance, frame_count(view),
                         has_pixels=image_start < Path(path).stat().st_size)
    except READ_ERRORS:
        info = None
    return found, info


def _start_verify_worker(context: SessionContext) -> None:
    global _worker_context
    _worker_context = context


def _verify_in_worker(entry: StagedFile) -> dict[str, Any]:
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
        manifest=read_manifest(manifest_path), profile=load_profile(profile_path), labels=labels,
        severities=severities,
        identifiers=IdentifierSet(tuple(settings.get("identifier_attributes", ()))))
    source_paths = [str(context.dicom_dir / entry.source) for entry in
                    context.manifest.files]
    infos = []
    for found, info in map_in_workers(_identifiers_of_source, source_paths, threads,
                                      _start_identifier_worker,
                                      (context.identifiers.extra_keywords,)):
        context.identifiers.merge(found)
        infos.append(info)
    context.matcher = context.identifiers.matcher()
    context.ocr_sample = tuple((settings.get("ocr") or {}).get("sample", OCR_ALL_FRAMES))
    context.ocr_plan = ocr_plan(context.manifest.files, infos, context.ocr_sample)
    if any(severities[check] != "off" for check in (
            "burned_in_annotation", "burned_in_risk", *OCR_CHECKS)):
        context.burned_in = BurnedInScreen(use_filter_list=severities["burned_in_risk"] != "off")
    phi_log_dir = settings.get("phi_log") or ""
    if phi_log_dir:
        context.phi_rows = []
    check_inventory(context)
    check_labels(context)
    check_staged_names(context)
    ocr_active = any(context.active(check) for check in OCR_CHECKS)
    if threads > 1 and context.ocr_plan and ocr_active:
        load_engines()
    for tallies in map_in_workers(_verify_in_worker, context.manifest.files, threads,
                                  _start_verify_worker, (context,)):
        _merge_tallies(context, tallies)
    review_page = review_page_beside(context.staged_session_dir)
    ocr_counts = None
    if ocr_active:
        ocr_counts = {key: context.ocr_counts[key] for key in (
            "images", "frames", "read", "with_text", "matched", "not_decoded")}
        title = "/".join(labels[key] for key in ("group", "project", "subject", "session"))
        write_review_page(review_page, title, context.review_images, ocr_counts)
    # A label found to hold an identifier is not repeated in the report.
    flagged = {column for column, _needle in labels_holding_identifiers(context)}
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
    report = session_report(context, labels, flagged, review_page if ocr_active else None,
                            ocr_counts if ocr_active else None, shown_phi_log)
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


__all__ = ["verify_session"]
