"""One registry of checks: ``deidpipe.verification.registry.CHECKS`` names each check with its
default and the severities the config may give it. The config schema, the README's table and
the report page follow it; these tests fail when one of them drifts.

Each comparison is a function that returns what disagrees (empty: all agree), run on the real
files and, to show that it can fail, on mutated copies of them."""

import copy
from pathlib import Path
from typing import Any

import pytest
from test_report_html import GROUP, PROJECT, labels, new_report, parse, session, write_session

from deidpipe.report import write_summary
from deidpipe.schema import load_schema
from deidpipe.stage import stage_session
from deidpipe.synthetic import SeriesSpec, SessionSpec, build_session
from deidpipe.verification.registry import CHECKS, Check, resolve_severities
from deidpipe.verify import verify_session

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
README_HEADING = "### Verification checks"
README_HEADER = ["check", "default", "what it looks for"]


# ---- (a) the config schema -------------------------------------------------------------------

def schema_checks() -> dict[str, Any]:
    """properties.checks.properties of workflow/deidpipe/schemas/config.schema.yaml, as loaded."""
    return copy.deepcopy(load_schema("config")["properties"]["checks"]["properties"])


def schema_disagreements(checks: dict[str, Any],
                         registry: dict[str, Check] = CHECKS) -> list[str]:
    problems = [f"{name}: in CHECKS, missing from the schema"
                for name in registry if name not in checks]
    problems += [f"{name}: in the schema, not in CHECKS" for name in checks
                 if name not in registry]
    for name in checks.keys() & registry.keys():
        spec, check = checks[name], registry[name]
        if False in spec.get("enum", []):
            problems.append(f"{name}: enum holds false: write off quoted (\"off\"), as YAML "
                            "reads a bare off as false")
        if spec.get("enum") != list(check.allowed):
            problems.append(f"{name}: enum {spec.get('enum')} != allowed {list(check.allowed)}")
        if spec.get("default") != check.default:
            problems.append(f"{name}: default {spec.get('default')!r} != {check.default!r}")
    return problems


def test_schema_follows_the_registry():
    assert schema_disagreements(schema_checks()) == []


def _drop(checks: dict[str, Any]) -> None:
    del checks["name_part"]


def _add(checks: dict[str, Any]) -> None:
    checks["spelling"] = {"enum": ["fail", "warn", "off"], "default": "warn"}


def _bare_off(checks: dict[str, Any]) -> None:
    checks["integrity"]["enum"] = ["fail", "warn", False]


def _enum_order(checks: dict[str, Any]) -> None:
    checks["labels"]["enum"] = ["warn", "fail", "off"]


def _inventory_configurable(checks: dict[str, Any]) -> None:
    checks["inventory"]["enum"] = ["fail", "warn", "off"]


def _private_tags_off(checks: dict[str, Any]) -> None:
    checks["private_tags"]["enum"] = ["fail", "warn", "off"]


def _default(checks: dict[str, Any]) -> None:
    checks["staff_name"]["default"] = "warn"


def _no_default(checks: dict[str, Any]) -> None:
    del checks["burned_in_risk"]["default"]


@pytest.mark.parametrize("mutate", [_drop, _add, _bare_off, _enum_order,
                                    _inventory_configurable, _private_tags_off, _default,
                                    _no_default], ids=lambda mutate: mutate.__name__.strip("_"))
def test_schema_check_fails_on_a_mutated_schema(mutate):
    checks = schema_checks()
    mutate(checks)
    assert schema_disagreements(checks)


# ---- (b) the README's table ------------------------------------------------------------------

def readme_check_rows(text: str) -> list[list[str]] | None:
    """The cells of the table under '### Verification checks' (header first), or None when
    there is no such heading."""
    lines = text.splitlines()
    if README_HEADING not in lines:
        return None
    rows: list[list[str]] = []
    for line in lines[lines.index(README_HEADING) + 1:]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break  # the first table ends
    return rows


def readme_disagreements(text: str, registry: dict[str, Check] = CHECKS) -> list[str]:
    rows = readme_check_rows(text)
    if rows is None:
        return [f"README.md has no '{README_HEADING}' heading"]
    if len(rows) < 2 or rows[0] != README_HEADER:
        return [f"the table under '{README_HEADING}' must have the columns {README_HEADER}"]
    body = rows[2:]  # after the header and the | --- | line
    names = [cells[0].strip("`") for cells in body]
    problems = []
    if names != list(registry):
        problems.append(f"README checks {names} != CHECKS {list(registry)} (same order); "
                        f"missing: {[name for name in registry if name not in names]}, "
                        f"not in CHECKS: {[name for name in names if name not in registry]}")
    for cells, name in zip(body, names, strict=True):
        if name not in registry:
            continue
        check = registry[name]
        expected = check.default + ("" if check.configurable else " (fixed)")
        default = cells[1] if len(cells) > 1 else ""
        if default != expected:
            problems.append(f"{name}: README default {default!r} != {expected!r}")
    return problems


def test_readme_table_follows_the_registry():
    text = README.read_text(encoding="utf-8")
    assert readme_disagreements(text) == []
    assert len(readme_check_rows(text) or []) == len(CHECKS) + 2


def _row(name: str) -> str:
    return next(line for line in README.read_text(encoding="utf-8").splitlines()
                if line.startswith(f"| `{name}` |"))


README_MUTATIONS = {
    "row dropped": lambda text: text.replace(_row("labels") + "\n", ""),
    "rows swapped": lambda text: text.replace(
        _row("integrity") + "\n" + _row("profile_actions"),
        _row("profile_actions") + "\n" + _row("integrity")),
    "extra row": lambda text: text.replace(
        _row("private_tags"), _row("private_tags") + "\n| `spelling` | warn | typos |"),
    "renamed": lambda text: text.replace("| `name_part` |", "| `name_parts` |"),
    "default changed": lambda text: text.replace("| `staff_name` | fail |",
                                                 "| `staff_name` | warn |"),
    "fixed dropped": lambda text: text.replace("| `inventory` | fail (fixed) |",
                                               "| `inventory` | fail |"),
    "fixed added": lambda text: text.replace("| `integrity` | fail |",
                                             "| `integrity` | fail (fixed) |"),
    "heading renamed": lambda text: text.replace(README_HEADING, "### Checks"),
    "columns changed": lambda text: text.replace("| check | default | what it looks for |",
                                                 "| check | severity | what it looks for |"),
}


@pytest.mark.parametrize("mutation", README_MUTATIONS)
def test_readme_check_fails_on_a_mutated_readme(mutation):
    text = README.read_text(encoding="utf-8")
    mutated = README_MUTATIONS[mutation](text)
    assert mutated != text, "the mutation no longer applies to README.md: update it"
    assert readme_disagreements(mutated)


# ---- (c) the report page's Checks section ----------------------------------------------------

def checks_block(registry: dict[str, Check] = CHECKS) -> dict[str, dict[str, Any]]:
    """A report's "checks" block with every check at its default, as verify_session writes
    it ('keep' is reported as off)."""
    return {name: {"severity": "off" if check.default == "keep" else check.default,
                   "findings": 0, "looks_for": check.description}
            for name, check in registry.items()}


def page_check_rows(tmp_path: Path, report: dict[str, Any]) -> list[list[str]]:
    """Rows of the Checks section of the page for one session with ``report``."""
    results = tmp_path / "results"
    row = session(2, "sub-001")
    write_session(results, row, report)
    write_summary([row], results, upload=False)
    return parse((results / "report.html").read_text(encoding="utf-8")).by_id(
        "checks").table_rows()


def page_disagreements(rows: list[list[str]], checks: dict[str, dict[str, Any]]) -> list[str]:
    """What the page's Checks rows get wrong about a report's "checks" block."""
    expected = [[name, str(entry["severity"]), str(entry["looks_for"])]
                for name, entry in checks.items()]
    if rows == expected:
        return []
    shown = [row[0] for row in rows if row]
    return [f"page rows {rows} != the report's checks {expected}"
            + (f"; missing {sorted(set(checks) - set(shown))}" if set(checks) - set(shown)
               else "")]


def test_the_page_shows_every_check_of_a_report(tmp_path):
    checks = checks_block()
    rows = page_check_rows(tmp_path, new_report("sub-001", "pass", checks=checks))
    assert page_disagreements(rows, checks) == []
    assert [row[0] for row in rows] == list(CHECKS)


def test_verify_session_reports_every_check_and_the_page_shows_them(tmp_path, profile_v1):
    """The whole way: registry -> verify_session's report -> the page (one small session)."""
    source, staged = tmp_path / "source", tmp_path / "staged"
    manifest = tmp_path / "manifest.json"
    build_session(SessionSpec("s", [SeriesSpec("MR_small.dcm", "T1w", 1)]), source)
    stage_session(source, profile_v1, staged, manifest)
    report = verify_session(source, staged, manifest, profile_v1, labels("sub-001"),
                            tmp_path / "report.json")
    assert report["session"] == {"group": GROUP, "project": PROJECT, "subject": "sub-001",
                                 "session": "ses-01"}
    assert list(report["checks"]) == list(CHECKS)
    assert {name: entry["severity"] for name, entry in report["checks"].items()} \
        == resolve_severities(None)
    assert report["checks"] == {name: {**entry, "findings": report["checks"][name]["findings"]}
                                for name, entry in checks_block().items()}
    rows = page_check_rows(tmp_path, report)
    assert page_disagreements(rows, report["checks"]) == []


PAGE_MUTATIONS = {
    "row dropped": lambda rows: rows[:3] + rows[4:],
    "rows swapped": lambda rows: [rows[1], rows[0], *rows[2:]],
    "severity wrong": lambda rows: [[rows[0][0], "warn", rows[0][2]], *rows[1:]],
    "description missing": lambda rows: [[*rows[0][:2], ""], *rows[1:]],
    "extra row": lambda rows: [*rows, ["spelling", "warn", "typos"]],
}


@pytest.mark.parametrize("mutation", PAGE_MUTATIONS)
def test_page_check_fails_on_mutated_rows(tmp_path, mutation):
    checks = checks_block()
    rows = page_check_rows(tmp_path, new_report("sub-001", "pass", checks=checks))
    assert page_disagreements(PAGE_MUTATIONS[mutation](rows), checks)


def test_page_check_fails_when_a_report_lacks_a_check(tmp_path):
    """A report whose checks block misses one (verify_session drifting from CHECKS)."""
    checks = checks_block()
    partial = {name: entry for name, entry in checks.items() if name != "patient_age"}
    rows = page_check_rows(tmp_path, new_report("sub-001", "pass", checks=partial))
    problems = page_disagreements(rows, checks)
    assert problems and "missing ['patient_age']" in problems[0]


def test_a_check_added_to_the_registry_alone_fails_all_three(tmp_path):
    registry = {**CHECKS, "spelling": Check("warn", "no typo remains")}
    assert schema_disagreements(schema_checks(), registry) == [
        "spelling: in CHECKS, missing from the schema"]
    assert readme_disagreements(README.read_text(encoding="utf-8"), registry)
    # A report written from the old registry, read against the new one.
    rows = page_check_rows(tmp_path, new_report("sub-001", "pass", checks=checks_block()))
    assert page_disagreements(rows, checks_block(registry))
