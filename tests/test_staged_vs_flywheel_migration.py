"""Staged files against Flywheel's other engine. flywheel-migration (the engine inside
`fw import --profile`; flywheel-cli 17 ships it, tests/real_fw installs that CLI) de-identifies
the same source files with the same profile, and every staged file must hold the same elements,
at any depth, with the same VR and value, as what it writes. The expected side comes from
an engine the pipeline does not use, not from the calls staging makes.

Two differences are known and wanted, and checked as such: staging's engine (fw-file-rs)
writes a zero preamble where flywheel-migration keeps the source's (any 128 bytes a scanner or
an export tool put there: pydicom's MR test file has a TIFF header in it); and staging gives a
standard file header to a file without one (its manifest entry says so in its note), which
flywheel-migration writes as it found it.
"""

from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from conftest import REPO
from deidpipe.profile import generate_profile
from deidpipe.stage import stage_session
from deidpipe.synthetic import (
    FAKE_IDENTIFIERS,
    SeriesSpec,
    SessionSpec,
    build_session,
    plant_demo_leaks,
)
from real_fw import Installed, deidentify_with_flywheel_migration, installed
from test_bad_dicom import STAGED_KINDS

PREAMBLE = 128
# Written by flywheel-migration as it found them: it cannot tell the file is DICOM by its
# name or header (no '.dcm', no preamble, no 'DICM'), so it writes nothing for it.
NOT_READ_BY_FLYWHEEL_MIGRATION = {"no_preamble_no_meta_implicit"}


def flywheel_migration() -> Installed:
    cli = installed("17")
    if cli.venv is None:
        pytest.skip(cli.problem)
    return cli


def elements(dataset: Dataset, prefix: str = "") -> dict[str, tuple[str, object]]:
    """Every element at any depth, by tag path: (VR, value as pydicom reads it)."""
    found: dict[str, tuple[str, object]] = {}
    for element in dataset:
        path = f"{prefix}{element.tag}"
        if element.VR == "SQ":
            found[path] = ("SQ", len(element.value))
            for number, item in enumerate(element.value):
                found.update(elements(item, f"{path}[{number}]."))
        else:
            found[path] = (element.VR, element.value)
    return found


def differences(ours: dict, theirs: dict) -> list[str]:
    return [f"{path}: staged {ours.get(path)!r:.80}, flywheel-migration {theirs.get(path)!r:.80}"
            for path in sorted(set(ours) | set(theirs)) if ours.get(path) != theirs.get(path)]


def stage_and_compare(source: Path, profile: Path, tmp_path: Path) -> dict[str, str]:
    """Stage ``source``, de-identify it with flywheel-migration too, and compare each staged
    file with its counterpart; returns each source file's outcome ('same', 'same data set', or
    'not read by flywheel-migration')."""
    staged = tmp_path / "staged"
    manifest = stage_session(source, profile, staged, tmp_path / "manifest.json")
    names = sorted(entry["source"] for entry in manifest["files"])
    written = deidentify_with_flywheel_migration(flywheel_migration(), profile, source, names,
                                                 tmp_path / "flywheel-migration")
    outcomes = {}
    for entry in manifest["files"]:
        outputs = written[entry["source"]]
        assert isinstance(outputs, list), (entry["source"], outputs)
        if not outputs:
            outcomes[entry["source"]] = "not read by flywheel-migration"
            continue
        assert len(outputs) == 1, outputs
        # Both engines name a file by its SOPInstanceUID and modality.
        assert Path(outputs[0]).name == Path(entry["staged"]).name
        ours_bytes = (staged / entry["staged"]).read_bytes()
        theirs_bytes = (tmp_path / "flywheel-migration" / outputs[0]).read_bytes()
        ours = pydicom.dcmread(staged / entry["staged"])
        theirs = pydicom.dcmread(tmp_path / "flywheel-migration" / outputs[0], force=True)
        assert differences(elements(ours), elements(theirs)) == [], entry["source"]
        assert ours_bytes[:PREAMBLE] == bytes(PREAMBLE), "staging keeps no preamble content"
        if entry.get("note"):  # given a standard header by staging
            outcomes[entry["source"]] = "same data set"
            continue
        assert differences(elements(ours.file_meta), elements(theirs.file_meta)) == []
        assert ours_bytes[PREAMBLE:] == theirs_bytes[PREAMBLE:], entry["source"]
        outcomes[entry["source"]] = "same"
    return outcomes


def plant_nested_and_private(dataset: Dataset) -> None:
    plant_demo_leaks(dataset)  # a name in ImageComments, an ID in a private tag
    item = Dataset()
    item.ScheduledProcedureStepDescription = "for " + FAKE_IDENTIFIERS["AccessionNumber"]
    item.ScheduledPerformingPhysicianName = FAKE_IDENTIFIERS["ReferringPhysicianName"]
    dataset.RequestAttributesSequence = Sequence([item])


@pytest.mark.parametrize("profile_name", ["PennBrainScienceCenter",
                                          "PennBrainScienceCenter_v3.0"])
def test_a_sessions_staged_files_are_what_flywheel_migration_writes(tmp_path, profile_name):
    """Both site profiles (v3.0 computes PatientAge from the birth date); MR and CT with the
    made-up identifiers, a name in free text, an ID in a private tag, a nested sequence."""
    source = tmp_path / "source"
    build_session(SessionSpec("s", [SeriesSpec("MR_small.dcm", "T1w", 3),
                                    SeriesSpec("CT_small.dcm", "CT", 2)],
                              plant=plant_nested_and_private), source)
    profile = tmp_path / "profile.yaml"
    profile.write_text(generate_profile(REPO / "profiles" / profile_name))
    outcomes = stage_and_compare(source, profile, tmp_path)
    assert list(outcomes.values()) == ["same"] * 5
    # The comparison would see a profile that changed nothing: identifiers are gone.
    staged = next((tmp_path / "staged").rglob("*.dcm"))
    assert pydicom.dcmread(staged).PatientName == ""


def test_files_of_every_kind_agree_with_flywheel_migration(tmp_path):
    """Transfer syntaxes, compressed and multi-frame images, files without pixels, and files
    without a standard header (the bad-DICOM tests' good kinds)."""
    source = tmp_path / "source"
    source.mkdir()
    for name, (make, _syntax) in STAGED_KINDS.items():
        (source / name).write_bytes(make())
    profile = tmp_path / "profile.yaml"
    profile.write_text(generate_profile(REPO / "profiles" / "PennBrainScienceCenter"))
    outcomes = stage_and_compare(source, profile, tmp_path)
    assert set(outcomes) == set(STAGED_KINDS)
    assert {name for name, outcome in outcomes.items()
            if outcome == "not read by flywheel-migration"} == NOT_READ_BY_FLYWHEEL_MIGRATION
    assert sum(outcome == "same" for outcome in outcomes.values()) >= 10
