"""The per-session path contract (deidpipe.paths): one definition for the rules and the code."""

import re
from pathlib import Path

import pytest

from conftest import REPO
from deidpipe import paths
from deidpipe.report import session_paths
from deidpipe.sheet import SessionRow

ROW = SessionRow(row=2, group="demo", project="deid-demo", subject="sub-001", session="ses-01",
                 dicom_dir="/data/x")
WILDCARDS = {"group": "demo", "project": "deid-demo", "subject": "sub-001", "session": "ses-01"}


def test_a_sessions_files_beside_and_below_its_manifest():
    manifest = paths.manifest("staging", ROW.path)
    assert manifest == "staging/demo/deid-demo/sub-001/ses-01.manifest.json"
    staged = paths.staged_dir_beside(manifest)
    assert staged == Path("staging/demo/deid-demo/sub-001/ses-01")
    assert paths.review_page_beside(staged) == Path(
        "staging/demo/deid-demo/sub-001/ses-01.review.html")
    assert paths.labels_of_manifest(manifest) == WILDCARDS
    assert paths.labels_of_manifest(Path("/abs") / manifest) == WILDCARDS


@pytest.mark.parametrize("manifest", ["staging/demo/ses-01.json", "ses-01.manifest.json.bak"])
def test_only_a_manifest_names_a_staged_folder(manifest):
    with pytest.raises(ValueError, match="manifest"):
        paths.staged_dir_beside(manifest)


def test_labels_need_the_whole_place():
    with pytest.raises(ValueError, match=r"\{staging\}/\{group\}/\{project\}/\{subject\}/"):
        paths.labels_of_manifest("sub-001/ses-01.manifest.json")


def test_the_rules_patterns_are_the_sessions_paths():
    # What a rule's pattern becomes for a session is what the code builds for it.
    for pattern, concrete in [
        (paths.manifest("staging", paths.SESSION_PATH), paths.manifest("staging", ROW.path)),
        (paths.verify_report("results", paths.SESSION_PATH),
         str(session_paths("results", ROW)["verify"])),
        (paths.upload_record("results", paths.SESSION_PATH),
         str(session_paths("results", ROW)["upload"])),
        (paths.log("results", "stage", paths.SESSION_PATH),
         "results/logs/stage/demo/deid-demo/sub-001/ses-01.log"),
        (paths.cli_log("results", paths.SESSION_PATH),
         "results/logs/upload/demo/deid-demo/sub-001/ses-01.fw.log"),
    ]:
        assert pattern.format(**WILDCARDS) == concrete


def test_settings_files_are_named_by_their_content():
    first = paths.settings_file("results", "verify", '{"checks": {}}')
    assert re.fullmatch(r"results/settings/verify-[0-9a-f]{12}\.json", first)
    assert paths.settings_file("results", "verify", '{"checks": {}}') == first
    assert paths.settings_file("results", "verify", '{"checks": {"x": "off"}}') != first


def test_the_rules_build_no_session_path_by_hand():
    # Every place below staging and results comes from deidpipe.paths.
    rules = sorted((REPO / "workflow" / "rules").glob("*.smk"))
    assert rules
    for rule in rules:
        text = rule.read_text()
        assert not re.search(r"\{(?:STAGING|RESULTS)\}/", text), rule.name
        assert ".manifest.json" not in text and "/logs/" not in text, rule.name
