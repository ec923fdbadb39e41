"""The checks run once per session: inventory, labels, staged names, private tags."""

from pathlib import Path
from typing import Any

from deidpipe.files import files_below
from deidpipe.identifiers import (
    Needle,
)
from deidpipe.private_knowledge import load_knowledge_base
from deidpipe.stage import list_source_files
from deidpipe.verification.context import SessionContext, shown_source_path, shown_staged_path
from deidpipe.verification.file_checks import leak_finding
from deidpipe.verification.registry import MAX_PRIVATE_VALUES, Finding, PrivateKey

# ---- session checks --------------------------------------------------------------------------

def check_inventory(context: SessionContext) -> None:
    """Every source file is accounted for once; every staged file is listed and unaltered."""
    manifest = context.manifest
    sources, not_followed = list_source_files(context.dicom_dir)
    expected = {source.relative_to(context.dicom_dir).as_posix() for source in sources}
    expected |= {outcome.source for outcome in not_followed}
    listed: list[str] = [entry.source for part in (manifest.files, manifest.skipped,
                                                   manifest.errors) for entry in part]
    for source in sorted(expected - set(listed)):
        context.add(Finding("inventory", shown_source_path(source, context), "",
                            "source file was neither staged nor listed as skipped"))
    for source in sorted({s for s in listed if listed.count(s) > 1}):
        context.add(Finding("inventory", shown_source_path(source, context), "",
                            "source file is listed more than once in the manifest"))
    for entry in manifest.errors:
        context.add(Finding("inventory", shown_source_path(entry.source, context), "",
                            f"could not be staged: {entry.error}"))
    for entry in manifest.skipped:
        if entry.reason == "not a DICOM file" and _has_dicom_preamble(
                context.dicom_dir / entry.source):
            context.add(Finding("inventory", shown_source_path(entry.source, context), "",
                                "was skipped as not DICOM but starts like a DICOM file"))
    staged_on_disk = files_below(context.staged_session_dir)
    staged_listed = {entry.staged for entry in manifest.files}
    for staged in sorted(staged_on_disk - staged_listed):
        context.add(Finding("inventory", shown_staged_path(staged, context), "",
                            "file in the staged folder that staging did not write"))
    for staged in sorted(staged_listed - staged_on_disk):
        context.add(Finding("inventory", shown_staged_path(staged, context), "",
                            "staged file listed in the manifest is missing"))
    if not manifest.files:
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
    folders = sorted({entry.staged.split("/", 1)[0] for entry in context.manifest.files})
    for folder in folders:
        for needle in context.matcher.find(folder):
            context.add(leak_finding(needle, shown_staged_path(f"{folder}/", context),
                                      "folder name (the Flywheel acquisition label)"))
    for entry in context.manifest.files:
        file_name = entry.staged.split("/", 1)[-1]
        for needle in context.matcher.find(file_name):
            context.add(leak_finding(needle, shown_staged_path(entry.staged, context),
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
