"""Every planted kind of leak is flagged with the right check and severity; clean controls
never fail. The catch rate and false-fail rate are printed at the end of the test run."""

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import identifier_needles
from deidpipe.profile import generate_profile
from deidpipe.stage import stage_session
from deidpipe.verify import verify_session
from expected_reports import assert_report_unchanged
from planted import CASES, CONTROLS, Case, build_case

REPO = Path(__file__).resolve().parent.parent
# Filled as the tests run; printed by conftest's terminal summary.
CATCH_RESULTS: dict[str, bool] = {}
CONTROL_RESULTS: dict[str, str] = {}


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory) -> Callable[[str], Path]:
    """The generated profile of a folder under profiles/, by name."""
    folder = tmp_path_factory.mktemp("profile")

    def generated(name: str) -> Path:
        path = folder / f"{name}.yaml"
        if not path.exists():
            path.write_text(generate_profile(REPO / "profiles" / name))
        return path
    return generated


def verify_case(case: Case, folder: Path, profile_path: Callable[[str], Path]
                ) -> tuple[dict, bytes]:
    source = folder / "source"
    build_case(case, source)
    staged = folder / "staged" / case.subject / "ses-01"
    manifest = folder / "manifest.json"
    profile = profile_path(case.profile)
    stage_session(source, profile, staged, manifest)
    labels = {"group": "g", "project": "p", "subject": case.subject, "session": "ses-01"}
    report_path = folder / "report.json"
    report = verify_session(source, staged, manifest, profile, labels, report_path)
    assert_report_unchanged("planted", case.kind, report_path, folder)
    return report, report_path.read_bytes()


@pytest.mark.parametrize("case", CASES, ids=[case.kind for case in CASES])
def test_planted_leak_is_flagged_with_the_right_check_and_severity(case, tmp_path,
                                                                   profile_path):
    report, report_bytes = verify_case(case, tmp_path, profile_path)
    flagged = [finding for finding in report["findings"]
               if finding["check"] == case.expected_check
               and finding["severity"] == case.expected_severity
               and finding.get("source_attribute", "") == case.expected_attribute]
    also = [(check, severity) for check, severity in case.also_expected
            if not any(finding["check"] == check and finding["severity"] == severity
                       for finding in report["findings"])]
    # A warn case that fails the session is a false fail, not a catch.
    CATCH_RESULTS[case.kind] = bool(flagged) and not also and (
        report["status"] == case.expected_severity)
    assert flagged, f"{case.kind}: no {case.expected_severity} finding of " \
                    f"{case.expected_check}; findings: {report['findings']}"
    assert not also, f"{case.kind}: missing {also}"
    assert report["status"] == case.expected_severity, (
        f"{case.kind}: status {report['status']}, expected {case.expected_severity}; "
        f"findings: {report['findings']}")
    for needle in identifier_needles():
        assert needle not in report_bytes, f"the report repeats a planted value ({case.kind})"


def test_identifier_after_the_pixel_data_is_located_there(tmp_path, profile_path):
    case = next(case for case in CASES if case.kind == "identifier after the pixel data")
    report, _ = verify_case(case, tmp_path, profile_path)
    tags = {finding["tag"] for finding in report["findings"]
            if finding["check"] == "identifier_leak"}
    assert tags and all(tag.startswith("bytes after the pixel data") for tag in tags)


def test_name_in_folder_name_is_withheld_from_the_report(tmp_path, profile_path):
    case = next(case for case in CASES if case.kind == "name in the acquisition folder name")
    report, report_bytes = verify_case(case, tmp_path, profile_path)
    folder_findings = [finding for finding in report["findings"]
                       if finding["tag"].startswith("folder name")]
    assert folder_findings
    assert all(finding["file"].startswith("(folder name withheld") for finding in
               report["findings"] if finding["file"])
    assert b"testperson" not in report_bytes.lower()


@pytest.mark.parametrize("case", CONTROLS, ids=[case.kind for case in CONTROLS])
def test_clean_control_has_no_fail(case, tmp_path, profile_path):
    report, _ = verify_case(case, tmp_path, profile_path)
    CONTROL_RESULTS[case.kind] = report["status"]
    fails = [finding for finding in report["findings"] if finding["severity"] == "fail"]
    assert not fails, fails
    assert report["status"] in ("pass", "warn")


def test_a_leak_two_sequences_deep_names_the_whole_path(tmp_path, profile_path):
    case = next(case for case in CASES if case.kind == "nested sequence item")
    report, _ = verify_case(case, tmp_path, profile_path)
    tags = {finding["tag"] for finding in report["findings"]
            if finding.get("source_attribute") == "PatientID"}
    # Each sequence once, with its item number (an earlier walker repeated the outer one).
    assert tags == {"RequestAttributesSequence (0040,0275) item 1 > "
                    "ReasonForRequestedProcedureCodeSequence (0040,100A) item 1 > "
                    "CodeMeaning (0008,0104)"}


def test_an_identifier_in_an_element_after_the_pixel_data_is_named_by_its_tag(tmp_path,
                                                                             profile_path):
    case = next(case for case in CASES if case.kind == "ID in the trailing padding element")
    report, _ = verify_case(case, tmp_path, profile_path)
    tags = {finding["tag"] for finding in report["findings"]
            if finding["check"] == "identifier_leak"}
    assert tags == {"DataSetTrailingPadding (FFFC,FFFC)"}


def test_a_short_id_equal_to_a_number_element_is_no_raw_byte_finding(tmp_path, profile_path):
    case = next(case for case in CONTROLS if "AcquisitionNumber" in case.kind)
    report, _ = verify_case(case, tmp_path, profile_path)
    assert report["identifier_values_searched"] > 0
    assert [finding for finding in report["findings"] if finding["check"] == "identifier_leak"
            ] == []
