import os
from pathlib import Path

import pydicom
import pytest

from conftest import tree_digest
from deidpipe.files import read_json, sha256_file
from deidpipe.stage import stage_session
from deidpipe.synthetic import FAKE_IDENTIFIERS, SeriesSpec, SessionSpec, build_session


@pytest.fixture
def source(tmp_path) -> Path:
    spec = SessionSpec("s", [SeriesSpec("MR_small.dcm", "T1w", 3),
                             SeriesSpec("CT_small.dcm", "CT", 2)],
                       extra_files={"notes.txt": b"not dicom\n"})
    folder = tmp_path / "source"
    build_session(spec, folder)
    return folder


def stage(source: Path, profile: Path, tmp_path: Path):
    staged = tmp_path / "staging" / "g" / "p" / "sub" / "ses"
    manifest = tmp_path / "results" / "stage.json"
    return stage_session(source, profile, staged, manifest, threads=2), staged, manifest


def test_staged_tree_names_and_manifest(source, profile_v1, tmp_path):
    manifest, staged, manifest_path = stage(source, profile_v1, tmp_path)
    assert manifest["counts"] == {"staged": 5, "skipped": 1, "error": 0}
    assert manifest == read_json(manifest_path)
    assert manifest["skipped"] == [{"source": "notes.txt", "reason": "not a DICOM file"}]
    folders = sorted(p.name for p in staged.iterdir())
    assert folders == ["1 - T1w", "2 - CT"]
    for entry in manifest["files"]:
        path = staged / entry["staged"]
        dataset = pydicom.dcmread(path)
        modality = dataset.Modality
        assert path.name == f"{dataset.SOPInstanceUID}.{modality}.dcm"
        assert entry["sop_instance_uid"] == dataset.SOPInstanceUID
        assert entry["sha256"] == sha256_file(path)
        assert entry["bytes"] == path.stat().st_size


def test_profile_applied_and_pixels_untouched(source, profile_v1, tmp_path):
    manifest, staged, _ = stage(source, profile_v1, tmp_path)
    for entry in manifest["files"]:
        original = pydicom.dcmread(source / entry["source"])
        copy = pydicom.dcmread(staged / entry["staged"])
        assert copy.PatientName == ""
        assert copy.PatientID == ""
        assert copy.PatientBirthDate == ""
        assert copy.DeidentificationMethod == "Penn_BSC_profile_v1.0"
        assert copy.PixelData == original.PixelData
        assert copy.SOPInstanceUID == original.SOPInstanceUID
        raw = (staged / entry["staged"]).read_bytes()
        for value in FAKE_IDENTIFIERS.values():
            assert value.encode() not in raw


def test_source_is_only_read(source, profile_v1, tmp_path):
    before = tree_digest(source)
    mtimes = {p: p.stat().st_mtime_ns for p in source.rglob("*")}
    stage(source, profile_v1, tmp_path)
    assert tree_digest(source) == before
    assert {p: p.stat().st_mtime_ns for p in source.rglob("*")} == mtimes


def test_restaging_replaces_the_old_copy_and_leaves_no_temporary_folders(
        source, profile_v1, tmp_path):
    _, staged, _ = stage(source, profile_v1, tmp_path)
    (staged / "stale.dcm").write_bytes(b"left over from an earlier run")
    leftover = staged.with_name(f".{staged.name}.staging-99999")
    leftover.mkdir()
    stage(source, profile_v1, tmp_path)
    assert not (staged / "stale.dcm").exists()
    siblings = {p.name for p in staged.parent.iterdir()}
    # A killed run's work folder holds staged copies: one job stages a session at a time
    # (Snakemake's lock), so a leftover is stale and removed.
    assert siblings == {"ses"}


def test_dicomdir_corrupt_and_duplicate_files_are_listed(source, profile_v1, tmp_path):
    (source / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 20)
    (source / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    (source / "empty.dcm").write_bytes(b"")
    first = next(source.glob("series01/*.dcm"))
    (source / "copy_of_first.dcm").write_bytes(first.read_bytes())
    manifest, staged, _ = stage(source, profile_v1, tmp_path)
    skipped = {entry["source"]: entry["reason"] for entry in manifest["skipped"]}
    errors = {entry["source"]: entry["error"] for entry in manifest["errors"]}
    assert "DICOMDIR index file" in skipped["DICOMDIR"]
    assert errors["broken.dcm"].startswith("starts like a DICOM file but its data cannot be read")
    assert errors["empty.dcm"].startswith("is empty (0 bytes)")
    duplicate = [name for name in errors if "same SOPInstanceUID" in errors[name]]
    assert len(duplicate) == 1
    assert manifest["counts"]["staged"] == 5


def test_symlinks_are_not_followed(source, profile_v1, tmp_path):
    outside = tmp_path / "outside.dcm"
    outside.write_bytes(next(source.glob("series01/*.dcm")).read_bytes())
    os.symlink(outside, source / "link.dcm")
    manifest, _, _ = stage(source, profile_v1, tmp_path)
    assert {"source": "link.dcm", "reason": "symbolic link (links are not followed)"} in \
        manifest["skipped"]


def test_staged_files_are_owner_only(source, profile_v1, tmp_path):
    old_umask = os.umask(0o022)
    try:
        _, staged, manifest_path = stage(source, profile_v1, tmp_path)
    finally:
        os.umask(old_umask)
    for path in [staged, *staged.rglob("*"), manifest_path]:
        assert path.stat().st_mode & 0o077 == 0, path


def test_worker_processes_stage_the_same_bytes_as_one_process(profile_v1, tmp_path):
    """A session large enough to be shared out to worker processes gives the same staged
    files and manifest as staging it file by file in one process."""
    spec = SessionSpec("big", [SeriesSpec("MR_small.dcm", "T1w", 30),
                               SeriesSpec("CT_small.dcm", "CT", 20)],
                       extra_files={"notes.txt": b"not dicom\n", "cut.dcm": b"\0" * 128 + b"DICM"})
    source = tmp_path / "source"
    build_session(spec, source)
    results = {}
    for threads in (1, 4):
        staged = tmp_path / f"staged-{threads}"
        manifest = stage_session(source, profile_v1, staged, tmp_path / f"m-{threads}.json",
                                 threads=threads)
        results[threads] = (manifest, tree_digest(staged))
    assert results[1] == results[4]
    assert results[4][0]["counts"] == {"staged": 50, "skipped": 1, "error": 1}


def test_a_stage_job_on_explicit_vr_files_does_not_import_pydicom(source, profile_v1, tmp_path):
    """Importing pydicom is a fifth of a second, paid by every stage job: a job whose files
    need no data dictionary (explicit VR, native encoding) must not import it."""
    import subprocess
    import sys

    script = ("import sys; from deidpipe.stage import stage_session; "
              "stage_session(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]); "
              "print(sorted(name for name in sys.modules if name.split('.')[0] == 'pydicom'))")
    result = subprocess.run([sys.executable, "-c", script, str(source), str(profile_v1),
                             str(tmp_path / "staged"), str(tmp_path / "m.json")],
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    assert read_json(tmp_path / "m.json")["counts"]["staged"] == 5
