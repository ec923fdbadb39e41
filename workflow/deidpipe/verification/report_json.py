"""The verification report (JSON): what the checks of a session found, and what a person
reviews besides (private tags, burned-in flags, free text, the Basic Profile audit, changes).
The report page (deidpipe.report) and the upload gate read it."""

from pathlib import Path
from typing import Any

from deidpipe.basic_profile import describe_tag
from deidpipe.findings import group_findings
from deidpipe.ocr import engine_description
from deidpipe.verification.context import SessionContext
from deidpipe.verification.registry import CHECKS, SEVERITY_ORDER, WITHHELD
from deidpipe.verification.session_checks import report_private_tags


def session_report(context: SessionContext, labels: dict[str, str], flagged: set[str],
                   review_page: Path | None, ocr_counts: dict[str, int] | None,
                   shown_phi_log: str | None) -> dict[str, Any]:
    """The report of a verified session. ``flagged``: the label columns that hold an
    identifier (withheld); ``review_page`` and ``ocr_counts``: None when OCR was off."""
    private_tags = report_private_tags(context)  # may add the session's private-tag finding
    status = max((finding.severity for finding in context.findings),
                 key=SEVERITY_ORDER.__getitem__, default="pass")
    counts = context.manifest.counts
    shown_labels = {key: (WITHHELD if key in flagged else value) for key, value in labels.items()}
    findings = [finding.as_dict() for finding in context.findings]
    return {
        "session": shown_labels,
        "status": status,
        "files": {"staged": counts["staged"], "skipped": counts["skipped"],
                  "errors": counts["error"]},
        "profile": context.manifest.profile,
        "engine": context.manifest.engine,
        "identifier_values_searched": len(context.identifiers.values),
        "identifier_values_too_short_to_search": len(context.identifiers.too_short),
        "checks": {name: {"severity": context.severities[name],
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
                 **ocr_counts} if ocr_counts is not None else None),
        "pixel_text": context.pixel_text,
        # The review page shows the images as they will be uploaded: it stays in staging.
        "review_page": (None if review_page is None else WITHHELD if flagged
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
