import hashlib
import io
import json
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from conftest import identifier_needles
from deidpipe.errors import PipelineError
from deidpipe.files import read_json
from deidpipe.identifiers import normalise
from deidpipe.stage import stage_session
from deidpipe.synthetic import (
    FAKE_IDENTIFIERS,
    SeriesSpec,
    SessionSpec,
    build_session,
    plant_image_comments,
    plant_private_tag,
)
from deidpipe.verification.registry import WITHHELD
from deidpipe.verify import verify_session

LABELS = {"group": "g", "project": "p", "subject": "sub-01", "session": "ses-01"}


def run(tmp_path: Path, profile: Path, plant=None, labels=None, tamper=None) -> dict:
    """Build a session (with an optional planted leak), stage it, optionally tamper, verify."""
    source = tmp_path / "source"
    build_session(SessionSpec("s", [SeriesSpec("MR_small.dcm", "T1w", 2)], plant=plant), source)
    staged = tmp_path / "staged"
    manifest = tmp_path / "manifest.json"
    stage_session(source, profile, staged, manifest)
    if tamper:
        tamper(source, staged, manifest)
    report_path = tmp_path / "report.json"
    report = verify_session(source, staged, manifest, profile, labels or LABELS, report_path)
    assert report == read_json(report_path)
    return report


def findings_of(report: dict, check: str) -> list[dict]:
    return [finding for finding in report["findings"] if finding["check"] == check]


def test_clean_session_passes(tmp_path, profile_v1):
    report = run(tmp_path, profile_v1)
    assert report["status"] == "pass"
    assert report["findings"] == []
    assert report["files"] == {"staged": 2, "skipped": 0, "errors": 0}
    assert report["identifier_values_searched"] == len(FAKE_IDENTIFIERS)


def test_identifier_in_a_private_tag_is_caught(tmp_path, profile_v1):
    report = run(tmp_path, profile_v1, plant=plant_private_tag)
    leaks = findings_of(report, "identifier_leak")
    assert report["status"] == "fail"
    assert len(leaks) == 2  # one per file
    assert {leak["tag"] for leak in leaks} == {"private tag [DEMO VENDOR] (0029,1010)"}
    assert {leak["source_attribute"] for leak in leaks} == {"PatientID"}
    assert all(leak["severity"] == "fail" and leak["file"].endswith(".MR.dcm") for leak in leaks)
    assert {leak["source_file"] for leak in leaks} == {"series01/IM0001.dcm",
                                                       "series01/IM0002.dcm"}


def test_name_in_free_text_in_another_form_is_caught(tmp_path, profile_v1):
    report = run(tmp_path, profile_v1, plant=plant_image_comments)
    leaks = findings_of(report, "identifier_leak")
    assert {leak["tag"] for leak in leaks} == {"ImageComments (0020,4000)"}
    assert {leak["source_attribute"] for leak in leaks} == {"PatientName"}


def plant_nested(dataset: Dataset) -> None:
    item = Dataset()
    item.ScheduledProcedureStepDescription = "for " + FAKE_IDENTIFIERS["AccessionNumber"]
    dataset.RequestAttributesSequence = Sequence([item])


def test_identifier_in_a_nested_sequence_is_caught(tmp_path, profile_v1):
    report = run(tmp_path, profile_v1, plant=plant_nested)
    leaks = findings_of(report, "identifier_leak")
    assert {leak["tag"] for leak in leaks} == {
        "RequestAttributesSequence (0040,0275) item 1 > "
        "ScheduledProcedureStepDescription (0040,0007)"}
    assert {leak["source_attribute"] for leak in leaks} == {"AccessionNumber"}


def test_subject_label_equal_to_patient_id_is_caught(tmp_path, profile_v1):
    labels = {**LABELS, "subject": FAKE_IDENTIFIERS["PatientID"]}
    report = run(tmp_path, profile_v1, labels=labels)
    found = findings_of(report, "labels")
    assert report["status"] == "fail"
    assert found == [{"check": "labels", "severity": "fail", "file": "",
                      "tag": "sessions.tsv column 'subject'",
                      "message": "the subject label contains the source's PatientID",
                      "source_attribute": "PatientID"}]


def rewrite_staged(staged: Path, change) -> None:
    for path in staged.rglob("*.dcm"):
        dataset = pydicom.dcmread(path)
        change(dataset)
        dataset.save_as(path)


def test_profile_action_and_method_violations_are_caught(tmp_path, profile_v1):
    def tamper(source, staged, manifest):
        def change(dataset):
            dataset.PatientAddress = "somewhere"
            del dataset.Allergies
            del dataset.DeidentificationMethod
        rewrite_staged(staged, change)

    report = run(tmp_path, profile_v1, tamper=tamper)
    actions = {f["message"] for f in findings_of(report, "profile_actions")}
    assert "PatientAddress should be empty but holds another value" in actions
    assert "Allergies should be present (set to the profile's value) but is missing" in actions
    method = findings_of(report, "deidentification_method")
    assert len(method) == 2 and "is missing" in method[0]["message"]
    changed = [f for f in findings_of(report, "inventory")
               if "changed after staging" in f["message"]]
    assert len(changed) == 2


def test_inventory_catches_extra_missing_and_unlisted_files(tmp_path, profile_v1):
    def tamper(source, staged, manifest):
        (staged / "extra.dcm").write_bytes(b"x")
        next(staged.rglob("*.MR.dcm")).unlink()
        (source / "arrived_later.dcm").write_bytes(b"x")

    report = run(tmp_path, profile_v1, tamper=tamper)
    messages = {(f["file"], f["message"]) for f in findings_of(report, "inventory")}
    assert ("extra.dcm", "file in the staged folder that staging did not write") in messages
    assert ("arrived_later.dcm", "source file was neither staged nor listed as skipped") \
        in messages
    assert any(message == "staged file listed in the manifest is missing"
               for _, message in messages)


def test_a_dicom_file_skipped_as_non_dicom_is_caught(tmp_path, profile_v1):
    def tamper(source, staged, manifest):
        document = json.loads(manifest.read_text())
        moved = document["files"].pop()
        (staged / moved["staged"]).unlink()
        document["skipped"].append({"source": moved["source"], "reason": "not a DICOM file"})
        manifest.write_text(json.dumps(document))

    report = run(tmp_path, profile_v1, tamper=tamper)
    assert any("starts like a DICOM file" in f["message"]
               for f in findings_of(report, "inventory"))


def test_reports_never_hold_identifier_values(tmp_path, profile_v1):
    def plant_everything(dataset):
        plant_private_tag(dataset)
        plant_image_comments(dataset)
        plant_nested(dataset)

    run(tmp_path, profile_v1, plant=plant_everything,
        labels={**LABELS, "subject": FAKE_IDENTIFIERS["PatientID"]})
    text = (tmp_path / "report.json").read_bytes()
    assert b"identifier_leak" in text
    for needle in identifier_needles():
        assert needle not in text


@pytest.mark.parametrize("left, right", [
    ("Testperson^Alice", "TESTPERSON ALICE"), ("Testperson^Alice", "testperson, alice"),
    ("MRN-404-177", "mrn404177"),
])
def test_normalise_folds_case_and_separators(left, right):
    assert normalise(left) == normalise(right)


def test_source_path_holding_an_identifier_is_withheld(tmp_path, profile_v1):
    def tamper(source, staged, manifest):
        # An export that named the folder after the patient.
        document = json.loads(manifest.read_text())
        for entry in document["files"]:
            entry["source"] = "TESTPERSON_ALICE/" + entry["source"]
        manifest.write_text(json.dumps(document))
        (source / "TESTPERSON_ALICE").mkdir()
        (source / "series01").rename(source / "TESTPERSON_ALICE" / "series01")

    report = run(tmp_path, profile_v1, plant=plant_image_comments, tamper=tamper)
    leaks = findings_of(report, "identifier_leak")
    assert leaks and {leak["source_file"] for leak in leaks} == {WITHHELD}
    assert b"TESTPERSON" not in (tmp_path / "report.json").read_bytes().upper()


def run_with(tmp_path: Path, profile: Path, settings: dict, plant=None, tamper=None) -> dict:
    source = tmp_path / "source"
    build_session(SessionSpec("s", [SeriesSpec("MR_small.dcm", "T1w", 2)], plant=plant), source)
    staged, manifest = tmp_path / "staged", tmp_path / "manifest.json"
    stage_session(source, profile, staged, manifest)
    if tamper:
        tamper(source, staged, manifest)
    return verify_session(source, staged, manifest, profile, LABELS, tmp_path / "report.json",
                          settings=settings)


def test_changed_pixel_data_fails_integrity(tmp_path, profile_v1):
    def tamper(source, staged, manifest):
        def change(dataset):
            pixels = bytearray(dataset.PixelData)
            pixels[0] ^= 0xFF
            dataset.PixelData = bytes(pixels)
            dataset.NumberOfFrames = 2
        rewrite_staged(staged, change)

    report = run(tmp_path, profile_v1, tamper=tamper)
    messages = {f["message"] for f in findings_of(report, "integrity")}
    assert "pixel data differs from the source's" in messages
    assert "2 frame(s) staged, the source has 1" in messages
    assert report["status"] == "fail"


def test_severities_come_from_the_settings(tmp_path, profile_v1):
    settings = {"checks": {"identifier_leak": "warn", "private_tags": "keep"}}
    report = run_with(tmp_path, profile_v1, settings, plant=plant_private_tag)
    assert report["status"] == "warn"
    assert {f["severity"] for f in findings_of(report, "identifier_leak")} == {"warn"}
    assert findings_of(report, "private_tags") == []
    assert report["private_tags"]["policy"] == "keep"
    assert report["private_tags"]["creators"] == [
        {"creator": "DEMO VENDOR", "group": "0029", "elements": 2, "files": 2}]
    assert {key: report["checks"]["identifier_leak"][key] for key in ("severity", "findings")} \
        == {"severity": "warn", "findings": 2}
    assert "raw bytes" in report["checks"]["identifier_leak"]["looks_for"]


def test_a_check_switched_off_reports_nothing(tmp_path, profile_v1):
    report = run_with(tmp_path, profile_v1, {"checks": {"identifier_leak": "off"}},
                      plant=plant_image_comments)
    assert findings_of(report, "identifier_leak") == []
    assert report["status"] == "pass"


def test_inventory_cannot_be_relaxed(tmp_path, profile_v1):
    with pytest.raises(PipelineError, match="checks.inventory"):
        run_with(tmp_path, profile_v1, {"checks": {"inventory": "warn"}})


def test_free_text_is_listed_unless_it_holds_an_identifier(tmp_path, profile_v1):
    def plant(dataset):
        plant_image_comments(dataset)
        dataset.StudyDescription = "Brain research protocol 7"

    report = run(tmp_path, profile_v1, plant=plant)
    shown = {(entry["attribute"], entry["value"]): entry["files"]
             for entry in report["free_text"]}
    assert shown[("StudyDescription", "Brain research protocol 7")] == 2
    assert shown[("SeriesDescription", "T1w")] == 2
    assert not any(attribute == "ImageComments" for attribute, _value in shown)
    assert report["free_text_withheld"] == 1


def test_basic_profile_audit_and_changes_are_counted(tmp_path, profile_v1):
    report = run(tmp_path, profile_v1)
    audit = {entry["attribute"]: entry for entry in report["basic_profile_audit"]}
    # The Penn profile keeps dates and descriptions on purpose; the audit shows them.
    assert audit["StudyDate"] == {"attribute": "StudyDate", "tag": "(0008,0020)",
                                  "action": "Z", "files": 2}
    assert "PatientName" not in audit
    changes = {(entry["attribute"], entry["action"]): entry["files"]
               for entry in report["changes"]}
    assert changes[("PatientName", "emptied")] == 2
    assert changes[("DeidentificationMethod", "added")] == 2
    # Attributes staging left alone are not changes (their stored bytes are compared).
    changed = {attribute for attribute, _action in changes}
    assert not changed & {"SOPClassUID", "Modality", "Rows", "StudyDate", "SeriesDescription"}
    assert report["status"] == "pass"


def test_phi_log_holds_values_owner_only_and_the_report_does_not(tmp_path, profile_v1):
    phi_log = tmp_path / "phi-log"
    report = run_with(tmp_path, profile_v1, {"phi_log": str(phi_log)})
    log_path = Path(report["phi_log"])
    assert log_path == phi_log / "g/p/sub-01/ses-01.tsv"
    assert log_path.stat().st_mode & 0o777 == 0o600
    rows = log_path.read_text().splitlines()
    assert rows[0].split("\t") == ["staged_file", "attribute", "tag", "action", "before",
                                   "after"]
    assert any(f"\tPatientID\t(0010,0020)\temptied\t{FAKE_IDENTIFIERS['PatientID']}\t" in row
               for row in rows)
    for needle in identifier_needles():
        assert needle not in (tmp_path / "report.json").read_bytes()


def test_burned_in_flags_are_listed(tmp_path, profile_v1):
    def plant(dataset):
        dataset.BurnedInAnnotation = "YES"

    report = run(tmp_path, profile_v1, plant=plant)
    assert [flag["severity"] for flag in report["burned_in"]] == ["fail", "fail"]
    assert {f["check"] for f in report["findings"]} == {"burned_in_annotation"}


def test_worker_processes_give_the_same_report_as_one_process(tmp_path, profile_v1):
    """Files shared out to worker processes: the report (findings in order, tallies, free
    text, changes, PHI log) is the same as checking them one by one in the job's process."""
    source = tmp_path / "source"

    def plant_every_fifth(dataset: Dataset) -> None:
        if dataset.InstanceNumber % 5 == 0:
            plant_image_comments(dataset)
            plant_private_tag(dataset)

    build_session(SessionSpec("s", [SeriesSpec("MR_small.dcm", "T1w", 24),
                                    SeriesSpec("CT_small.dcm", "CT", 16, plant=plant_every_fifth)]),
                  source)
    staged, manifest = tmp_path / "staged", tmp_path / "manifest.json"
    stage_session(source, profile_v1, staged, manifest)
    reports, phi_logs = {}, {}
    for threads in (1, 3):
        settings = {"phi_log": str(tmp_path / f"phi-{threads}")}
        report = verify_session(source, staged, manifest, profile_v1, LABELS,
                                tmp_path / f"report-{threads}.json", settings, threads=threads)
        phi_logs[threads] = Path(report.pop("phi_log")).read_text()
        reports[threads] = report
    assert reports[1] == reports[3]
    assert phi_logs[1] == phi_logs[3]
    assert reports[3]["status"] == "fail"
    assert len(findings_of(reports[3], "identifier_leak")) == 6  # 3 CT files x 2 planted
    assert phi_logs[3].count("\tPatientID\t(0010,0020)\temptied\t") == 40
    assert {entry["files"] for entry in reports[3]["changes"]
            if entry["attribute"] == "PatientName"} == {40}
    assert sum(creator["elements"] for creator in reports[3]["private_tags"]["creators"]) > 0


def test_verify_command_finds_the_source_and_staged_folders_from_the_manifest(tmp_path,
                                                                             profile_v1):
    """The rule gives the verify command only the manifest: it names the source folder, and
    the staged folder lies beside it. A manifest without the source folder is a clear error."""
    import subprocess
    import sys

    source = tmp_path / "source"
    build_session(SessionSpec("s", [SeriesSpec("MR_small.dcm", "T1w", 2)]), source)
    manifest = tmp_path / "staging" / "ses-01.manifest.json"
    stage_session(source, profile_v1, tmp_path / "staging" / "ses-01", manifest)
    command = [sys.executable, "-m", "deidpipe", "verify", "--manifest", str(manifest),
               "--profile", str(profile_v1), "--report", str(tmp_path / "report.json"),
               *(f"--{key}={value}" for key, value in LABELS.items())]
    subprocess.run(command, check=True, capture_output=True)
    assert read_json(tmp_path / "report.json")["status"] == "pass"
    written = read_json(manifest)
    del written["source_dir"]
    manifest.write_text(json.dumps(written))
    failed = subprocess.run(command, capture_output=True, text=True)
    assert failed.returncode == 1
    assert "does not name its source folder" in failed.stderr


def plant_site_identifier(dataset: Dataset) -> None:
    """A site that keeps its MRN in StudyID, and the same number typed into a kept free text."""
    dataset.StudyID = "ZX4471902"
    dataset.ImageComments = "scan ref ZX4471902 (technologist note)"


@pytest.mark.parametrize("attributes,caught", [(["StudyID"], True), ([], False)],
                         ids=["StudyID named", "control: not named"])
def test_identifier_attributes_make_verification_look_for_their_values(
        tmp_path, profile_v1, attributes, caught):
    report = run_with(tmp_path, profile_v1, {"identifier_attributes": attributes},
                      plant=plant_site_identifier)
    leaks = [finding for finding in findings_of(report, "identifier_leak")
             if finding["source_attribute"] == "StudyID"]
    if caught:
        assert {leak["tag"] for leak in leaks} >= {"ImageComments (0020,4000)"}
        assert report["status"] == "fail"
        assert report["identifier_values_searched"] == len(FAKE_IDENTIFIERS) + 1
    else:
        assert leaks == []
        assert report["identifier_values_searched"] == len(FAKE_IDENTIFIERS)


# ---- what the README promises of the gate: private tags, short values, bytes outside elements

def plant_unknown_private_text(dataset: Dataset) -> None:
    """A private element holding text, of a creator TCIA's knowledge base does not know."""
    block = dataset.private_block(0x0031, "UNLISTED SCANNER CO", create=True)
    block.add_new(0x20, "LO", "coil check passed")


@pytest.mark.parametrize("policy,status,severities", [
    ("fail", "fail", ["fail"]), ("warn", "warn", ["warn"]), ("keep", "pass", [])],
    ids=["fail fails the session", "warn (the default) warns", "control: keep lists only"])
def test_private_tags_policy_sets_the_sessions_status(tmp_path, profile_v1, policy, status,
                                                      severities):
    report = run_with(tmp_path, profile_v1, {"checks": {"private_tags": policy}},
                      plant=plant_unknown_private_text)
    assert report["status"] == status
    assert [finding["severity"] for finding in findings_of(report, "private_tags")] == severities
    assert report["private_tags"]["policy"] == policy
    assert findings_of(report, "identifier_leak") == []  # the text is no identifier


def test_a_clean_session_is_not_failed_by_the_private_tags_fail_policy(tmp_path, profile_v1):
    report = run_with(tmp_path, profile_v1, {"checks": {"private_tags": "fail"}})
    assert report["status"] == "pass"
    assert findings_of(report, "private_tags") == []


def test_values_too_short_to_search_are_counted_once_each(tmp_path, profile_v1):
    """Values with fewer than three letters or digits (after case and separators are folded)
    are counted, each distinct one once; a value of three is searched, not counted."""
    baseline = run_with(tmp_path / "baseline", profile_v1, {})

    def plant_short_values(dataset: Dataset) -> None:
        dataset.OtherPatientIDs = "7B"  # two characters
        dataset.AccessionNumber = "A"  # one
        dataset.PatientTelephoneNumbers = "5-5"  # 'folds to two digits'
        dataset.MedicalRecordLocator = "7-b"  # the same as OtherPatientIDs once folded
        dataset.PatientAddress = "X12"  # three: searched (the control)

    report = run_with(tmp_path / "planted", profile_v1, {}, plant=plant_short_values)
    short = "identifier_values_too_short_to_search"
    assert report[short] == baseline[short] + 3
    assert report["status"] == "pass"


def rewrite_staged_bytes(staged: Path, manifest: Path, change) -> None:
    """Change every staged file's bytes as someone editing them after staging would, and the
    manifest with them (so that only the changed content can give a finding)."""
    document = read_json(manifest)
    for entry in document["files"]:
        path = staged / entry["staged"]
        data = change(path.read_bytes())
        path.write_bytes(data)
        entry["sha256"], entry["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    manifest.write_text(json.dumps(document))


def in_preamble(text: bytes):
    def change(data: bytes) -> bytes:
        assert data[128:132] == b"DICM"
        return text.ljust(128, b"\0") + data[128:]
    return change


@pytest.mark.parametrize("text,attribute", [
    (b"exported for MRN40417723", "PatientID"),
    (b"ALICE TESTPERSON study copy", "PatientName"),
    (b"dob 09/23/1958", "PatientBirthDate"),
    (b"Testperson, A. Q.", "PatientName"),
    (b"born September 23, 1958", "PatientBirthDate"),
    (b"42 Imaginary Lane, Nowhereville", "PatientAddress"),
], ids=["ID as written", "name reordered, capitals", "birth date as M/D/Y", "name with initials",
        "birth date in words", "address with mixed separators"])
def test_an_identifier_in_the_preamble_is_caught(tmp_path, profile_v1, text, attribute):
    report = run_with(tmp_path, profile_v1, {}, tamper=lambda source, staged, manifest:
                      rewrite_staged_bytes(staged, manifest, in_preamble(text)))
    leaks = findings_of(report, "identifier_leak")
    assert report["status"] == "fail"
    assert len(leaks) == 2  # both files
    assert {leak["source_attribute"] for leak in leaks} == {attribute}
    assert all("preamble" in leak["tag"] for leak in leaks), leaks
    assert findings_of(report, "inventory") == []


def test_text_in_the_preamble_without_an_identifier_passes(tmp_path, profile_v1):
    report = run_with(tmp_path, profile_v1, {}, tamper=lambda source, staged, manifest:
                      rewrite_staged_bytes(staged, manifest,
                                           in_preamble(b"Scanner export 2024, site copy")))
    assert report["status"] == "pass", report["findings"]


def in_file_meta(keyword: str, value):
    def change(data: bytes) -> bytes:
        dataset = pydicom.dcmread(io.BytesIO(data))
        setattr(dataset.file_meta, keyword, value)
        written = io.BytesIO()
        dataset.save_as(written, enforce_file_format=True)
        return written.getvalue()
    return change


@pytest.mark.parametrize("keyword,value,attribute", [
    ("SourceApplicationEntityTitle", "MRN40417723", "PatientID"),
    ("PrivateInformation", b"for Testperson^Alice^Q", "PatientName"),
    ("ImplementationVersionName", "1958-09-23", "PatientBirthDate"),
], ids=["ID in an AE title", "name in binary private information", "birth date in a version"])
def test_an_identifier_in_the_file_meta_is_caught(tmp_path, profile_v1, keyword, value,
                                                  attribute):
    def tamper(source, staged, manifest):
        if keyword == "PrivateInformation":  # goes with the UID of its creator
            rewrite_staged_bytes(staged, manifest, in_file_meta(
                "PrivateInformationCreatorUID", "1.2.826.0.1.3680043.8.498.1"))
        rewrite_staged_bytes(staged, manifest, in_file_meta(keyword, value))

    report = run_with(tmp_path, profile_v1, {}, tamper=tamper)
    leaks = findings_of(report, "identifier_leak")
    assert report["status"] == "fail"
    assert {leak["source_attribute"] for leak in leaks} == {attribute}
    assert {leak["tag"].split(" (")[0] for leak in leaks} == {keyword}
    assert len(leaks) == 2


def test_a_rewritten_file_meta_without_identifiers_passes(tmp_path, profile_v1):
    report = run_with(tmp_path, profile_v1, {}, tamper=lambda source, staged, manifest:
                      rewrite_staged_bytes(staged, manifest, in_file_meta(
                          "SourceApplicationEntityTitle", "SCANNER_AE_7")))
    assert findings_of(report, "identifier_leak") == []
