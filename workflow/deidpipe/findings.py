"""Findings grouped for a reader: one name in ImageComments across a 312-file session is one
problem, not 312. A group is every finding with the same check, severity, tag path, source
attribute and message; it counts the files, names a few as examples and lists every file (for
a machine to read). The verification report keeps the flat list of findings as well."""

from collections.abc import Iterable, Mapping
from typing import Any

# Findings that are one problem: same check, severity, place, matched attribute and message.
GROUP_KEY = ("check", "severity", "tag", "source_attribute", "message")
GROUP_SEVERITY_ORDER = {"fail": 0, "warn": 1}
EXAMPLE_FILES = 3


def _text(finding: Mapping[str, object], key: str) -> str:
    value = finding.get(key)
    return "" if value is None else str(value)


def group_findings(findings: Iterable[Mapping[str, str]]) -> list[dict[str, Any]]:
    """Group ``findings`` (the report's flat list, in manifest order).

    One group per (check, severity, tag, source_attribute, message), in order of first
    appearance, fail groups before warn groups (then any other severity). Each group:
    ``check``, ``severity``, ``tag``, ``message``, ``source_attribute`` (only when not empty),
    ``files`` (how many of its findings name a file), ``examples`` (the first
    ``EXAMPLE_FILES`` file names) and ``file_list`` (every file, with ``source_file`` when the
    finding names one). Findings about the whole session (no file) group too: ``files`` 0.
    """
    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    for finding in findings:
        key = tuple(_text(finding, name) for name in GROUP_KEY)
        group = groups.get(key)
        if group is None:
            check, severity, tag, source_attribute, message = key
            group = {"check": check, "severity": severity, "tag": tag, "message": message}
            if source_attribute:
                group["source_attribute"] = source_attribute
            group.update({"files": 0, "examples": [], "file_list": []})
            groups[key] = group
        file = _text(finding, "file")
        if not file:
            continue
        entry = {"file": file}
        source_file = _text(finding, "source_file")
        if source_file:
            entry["source_file"] = source_file
        group["files"] += 1
        group["file_list"].append(entry)
        if len(group["examples"]) < EXAMPLE_FILES:
            group["examples"].append(file)
    # sorted() is stable: within a severity, groups keep their order of first appearance.
    return sorted(groups.values(), key=lambda group: GROUP_SEVERITY_ORDER.get(
        group["severity"], len(GROUP_SEVERITY_ORDER)))


__all__ = ["group_findings", "EXAMPLE_FILES"]
