"""DICOM input: every kind of file a site sends is either staged correctly or listed
in the manifest's errors with a message a research coordinator can act on, and never a value.

One session holds every kind at once (staged and verified once for the module): the bad files
fail their session through verification's inventory check, the good ones are staged beside them.
"""

import io
import json
import os
import re
import struct
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from fw_file_rs.dcm import Context
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_has_tag
from pydicom.uid import UID, ExplicitVRLittleEndian

from conftest import REPO, identifier_needles, run_unprivileged, tree_digest
from deidpipe.files import files_below
from deidpipe.profile import generate_profile
from deidpipe.stage import deidentify_file, make_engine, stage_session
from deidpipe.synthetic import FAKE_IDENTIFIERS, UID_PREFIX, plant_image_comments
from deidpipe.verify import verify_session
from expected_reports import assert_report_unchanged

LABELS = {"group": "g", "project": "p", "subject": "sub-01", "session": "ses-01"}
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


# ---- building the inputs (pydicom's test files with made-up identifiers planted) ---------------

def planted(template: str, number: int, change: Callable[[pydicom.Dataset], None] | None = None
            ) -> bytes:
    """A pydicom test file with the fake identifiers and its own SOPInstanceUID, written in its
    own transfer syntax (and without file meta if it had none)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(get_testdata_file(template), force=True)
    for keyword, value in FAKE_IDENTIFIERS.items():
        setattr(dataset, keyword, value)
    dataset.SOPInstanceUID = f"{UID_PREFIX}4.{number}"
    if "MediaStorageSOPInstanceUID" in getattr(dataset, "file_meta", {}):
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    if change:
        change(dataset)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


def without_file_header(data: bytes) -> bytes:
    """The data set alone, as old PACS exports write it: no preamble, no 'DICM', no file meta."""
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00"
    (group_length,) = struct.unpack("<I", data[140:144])
    return data[144 + group_length:]


def three_frames(dataset: pydicom.Dataset) -> None:
    dataset.NumberOfFrames = 3
    dataset.PixelData = bytes(dataset.PixelData) * 3


def mrn_in_file_meta(dataset: pydicom.Dataset) -> None:
    # An export that put the MRN into the file meta's source AE title, right after the
    # transfer syntax.
    del dataset.file_meta.ImplementationVersionName
    dataset.file_meta.SourceApplicationEntityTitle = "ID " + FAKE_IDENTIFIERS["PatientID"]


def widen_transfer_syntax(data: bytes) -> bytes:
    """A damaged length of the transfer syntax element, so that its 'value' runs on into the
    elements after it: fw-file-rs quotes that 'value' in its error message."""
    at = data.index(b"\x02\x00\x10\x00UI")
    return data[:at + 6] + struct.pack("<H", 1200) + data[at + 8:]


def unknown_transfer_syntax(data: bytes) -> bytes:
    old = ExplicitVRLittleEndian.encode() + b"\0"
    new = b"1.2.840.99999.7.7.1\0"
    assert len(old) == len(new) and data.count(old) == 1
    return data.replace(old, new)


def shorten_patient_name(data: bytes) -> bytes:
    """PatientName's length made too short: a reader then takes the rest of the name for the
    next element's tag, which must never be shown (its hex digits spell part of the name)."""
    at = data.index(b"\x10\x00\x10\x00PN")
    return data[:at + 6] + struct.pack("<H", 6) + data[at + 8:]


def mr(number: int) -> bytes:
    return planted("MR_small.dcm", number)


# name -> (bytes, what the staged file's transfer syntax is)
STAGED_KINDS: dict[str, tuple[Callable[[], bytes], str]] = {
    "explicit_little_endian.dcm": (lambda: planted("CT_small.dcm", 1), "1.2.840.10008.1.2.1"),
    "implicit_little_endian.dcm": (lambda: planted("MR_small_implicit.dcm", 2),
                                   "1.2.840.10008.1.2"),
    "explicit_big_endian.dcm": (lambda: planted("MR_small_bigendian.dcm", 3),
                                "1.2.840.10008.1.2.2"),
    "deflated.dcm": (lambda: planted("image_dfl.dcm", 4), "1.2.840.10008.1.2.1"),
    "jpeg_baseline.dcm": (lambda: planted("SC_rgb_jpeg_dcmtk.dcm", 5), "1.2.840.10008.1.2.4.50"),
    "jpeg2000.dcm": (lambda: planted("JPEG2000.dcm", 6), "1.2.840.10008.1.2.4.91"),
    "rle.dcm": (lambda: planted("MR_small_RLE.dcm", 7), "1.2.840.10008.1.2.5"),
    "multiframe_implicit_15.dcm": (lambda: planted("rtdose.dcm", 8), "1.2.840.10008.1.2"),
    "multiframe_rle_2.dcm": (lambda: planted("SC_rgb_rle_2frame.dcm", 9), "1.2.840.10008.1.2.5"),
    "multiframe_explicit_3.dcm": (lambda: planted("MR_small.dcm", 10, three_frames),
                                  "1.2.840.10008.1.2.1"),
    "no_preamble_no_meta_implicit": (
        lambda: without_file_header(planted("MR_small_implicit.dcm", 11)), "1.2.840.10008.1.2"),
    "no_preamble_no_meta_explicit.dcm": (
        lambda: without_file_header(planted("CT_small.dcm", 12)), "1.2.840.10008.1.2.1"),
    "no_preamble_no_meta_big_endian.dcm": (
        lambda: without_file_header(planted("MR_small_bigendian.dcm", 13)), "1.2.840.10008.1.2.2"),
    "no_preamble_with_meta.dcm": (lambda: mr(14)[132:], "1.2.840.10008.1.2.1"),
    "no_meta_group_length.dcm": (lambda: (lambda d: d[:132] + d[144:])(mr(15)),
                                 "1.2.840.10008.1.2.1"),
    "rtstruct_without_meta.dcm": (lambda: planted("rtstruct.dcm", 16), "1.2.840.10008.1.2"),
    "rtplan_no_pixels.dcm": (lambda: planted("rtplan.dcm", 17), "1.2.840.10008.1.2"),
}

# name -> (bytes, part of the expected error message)
ERROR_KINDS: dict[str, tuple[Callable[[], bytes], str]] = {
    "zero_bytes.dcm": (lambda: b"", "is empty (0 bytes)"),
    "cut_in_header.dcm": (lambda: mr(30)[:700], "its header runs past the end of the file"),
    "cut_in_pixel_data.dcm": (lambda: mr(31)[:-1000], "ends inside the image data"),
    "cut_in_jpeg_fragments.dcm": (lambda: planted("SC_rgb_jpeg_dcmtk.dcm", 32)[:-500],
                                  "ends inside the image data"),
    "cut_deflated.dcm": (lambda: planted("image_dfl.dcm", 33)[:2500], "deflated"),
    "report.dcm": (lambda: b"%PDF-1.4\n% scan report for "
                   + FAKE_IDENTIFIERS["PatientName"].encode() + b"\n",
                   "named like a DICOM file but is not one"),
    "compressed_without_meta.dcm": (lambda: without_file_header(planted("JPEG2000.dcm", 34)),
                                    "how the image is compressed cannot be known"),
    "damaged_transfer_syntax.dcm": (lambda: widen_transfer_syntax(
        planted("MR_small.dcm", 35, mrn_in_file_meta)),
                                    "(file meta information) is damaged"),
    "unknown_transfer_syntax.dcm": (lambda: unknown_transfer_syntax(mr(36)),
                                    "not a standard DICOM one"),
    "name_length_damaged.dcm": (lambda: shorten_patient_name(mr(38)),
                                "has no valid value representation"),
    "no_sop_instance_uid.dcm": (lambda: planted("MR_small.dcm", 37,
                                                lambda d: delattr(d, "SOPInstanceUID")),
                                "has no valid SOPInstanceUID"),
}


# ---- one session with every kind, staged and verified once -----------------------------------

@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("zoo")
    source = root / "source"
    (source / "good").mkdir(parents=True)
    (source / "bad").mkdir()
    for name, (make, _syntax) in STAGED_KINDS.items():
        (source / "good" / name).write_bytes(make())
    for name, (make, _message) in ERROR_KINDS.items():
        (source / "bad" / name).write_bytes(make())
    profile = root / "profile.yaml"
    profile.write_text(generate_profile(REPO / "profiles" / "PennBrainScienceCenter"))
    before = tree_digest(source)
    staged = root / "staging" / "g" / "p" / "sub-01" / "ses-01"
    manifest_path = root / "staging" / "g" / "p" / "sub-01" / "ses-01.manifest.json"
    manifest = stage_session(source, profile, staged, manifest_path, threads=3)
    after_staging = tree_digest(source)
    # pydicom's test files keep operators' names, which the v1.0 profile keeps too: this
    # session is about damaged files, so staff names only warn here.
    report = verify_session(source, staged, manifest_path, profile, LABELS,
                            root / "results" / "report.json",
                            settings={"checks": {"staff_name": "warn"}})
    assert_report_unchanged("bad_dicom", "zoo", root / "results" / "report.json", root)
    return {"source": source, "staged": staged, "manifest": manifest, "report": report,
            "manifest_text": manifest_path.read_text(), "source_unchanged": before == after_staging,
            "report_text": (root / "results" / "report.json").read_text()}


def staged_entry(zoo: dict, relative: str) -> dict:
    entries = [entry for entry in zoo["manifest"]["files"] if entry["source"] == relative]
    assert len(entries) == 1, (relative, zoo["manifest"]["errors"])
    return entries[0]


def read_source(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, force=True)


@pytest.mark.parametrize("name", list(STAGED_KINDS))
def test_kind_is_staged_with_identical_pixel_data(zoo, name):
    entry = staged_entry(zoo, f"good/{name}")
    staged_path = zoo["staged"] / entry["staged"]
    staged = pydicom.dcmread(staged_path)  # no force: a standard DICOM file
    for _element in staged.iterall():  # every value converts
        pass
    source = read_source(zoo["source"] / "good" / name)
    pixel_keywords = [keyword for keyword in PIXEL_KEYWORDS if keyword in source]
    assert pixel_keywords or name.startswith(("rtplan", "rtstruct"))
    for keyword in pixel_keywords:
        assert staged[keyword].value == source[keyword].value, keyword
    assert staged.get("NumberOfFrames", 1) == source.get("NumberOfFrames", 1)
    assert staged.file_meta.TransferSyntaxUID == STAGED_KINDS[name][1]
    assert staged.SOPInstanceUID == source.SOPInstanceUID == entry["sop_instance_uid"]
    assert staged.PatientName == "" and staged.PatientID == ""  # the profile was applied
    assert staged.DeidentificationMethod == "Penn_BSC_profile_v1.0"
    data = staged_path.read_bytes()
    assert [needle for needle in identifier_needles() if needle in data] == []
    findings = [finding for finding in zoo["report"]["findings"]
                if finding.get("source_file") == f"good/{name}"
                and finding["check"] in ("integrity", "inventory", "profile_actions")]
    assert findings == []


def test_multiframe_files_keep_their_frames(zoo):
    frames = {name: int(pydicom.dcmread(zoo["staged"] / staged_entry(zoo, f"good/{name}")
                                        ["staged"]).NumberOfFrames)
              for name in STAGED_KINDS if name.startswith("multiframe")}
    assert frames == {"multiframe_implicit_15.dcm": 15, "multiframe_rle_2.dcm": 2,
                      "multiframe_explicit_3.dcm": 3}


def test_files_given_a_standard_header_say_so(zoo):
    noted = {entry["source"] for entry in zoo["manifest"]["files"] if entry.get("note")}
    assert noted == {"good/deflated.dcm", "good/no_preamble_no_meta_implicit",
                     "good/no_preamble_no_meta_explicit.dcm",
                     "good/no_preamble_no_meta_big_endian.dcm", "good/no_preamble_with_meta.dcm",
                     "good/no_meta_group_length.dcm", "good/rtstruct_without_meta.dcm"}


@pytest.mark.parametrize("name", list(ERROR_KINDS))
def test_kind_is_an_error_that_fails_the_session(zoo, name):
    errors = {entry["source"]: entry["error"] for entry in zoo["manifest"]["errors"]}
    assert ERROR_KINDS[name][1] in errors[f"bad/{name}"]
    inventory = [finding for finding in zoo["report"]["findings"]
                 if finding["check"] == "inventory" and finding["file"] == f"bad/{name}"]
    assert [finding["severity"] for finding in inventory] == ["fail"]
    assert inventory[0]["message"].startswith("could not be staged: ")


def test_session_with_bad_files_fails_but_its_good_files_are_staged(zoo):
    counts = zoo["manifest"]["counts"]
    assert counts == {"staged": len(STAGED_KINDS), "skipped": 0, "error": len(ERROR_KINDS)}
    assert zoo["report"]["status"] == "fail"
    assert {finding["check"] for finding in zoo["report"]["findings"]
            if finding["severity"] == "fail"} == {"inventory"}
    unaccounted = [finding for finding in zoo["report"]["findings"]
                   if "neither staged nor listed" in finding["message"]]
    assert unaccounted == []


def test_source_is_unchanged_and_no_temporary_file_is_left(zoo):
    assert zoo["source_unchanged"]
    assert files_below(zoo["staged"]) == {entry["staged"] for entry in zoo["manifest"]["files"]}
    # The session folder, its manifest and the review page verification wrote beside them.
    assert sorted(path.name for path in zoo["staged"].parent.iterdir()) == [
        "ses-01", "ses-01.manifest.json", "ses-01.review.html"]


def test_engine_messages_would_leak_but_manifest_and_report_hold_no_value(zoo, tmp_path):
    # fw-file-rs quotes the damaged transfer syntax "value" (the elements it swallowed, the
    # patient's name among them) in its error: the manifest must describe, not quote.
    damaged = tmp_path / "damaged.dcm"
    damaged.write_bytes(ERROR_KINDS["damaged_transfer_syntax.dcm"][0]())
    with pytest.raises(ValueError) as raised:
        Context().read_until_pixels(str(damaged))
    assert FAKE_IDENTIFIERS["PatientID"] in str(raised.value).splitlines()[0][:200]
    assert FAKE_IDENTIFIERS["PatientName"] in str(raised.value)
    for text in (zoo["manifest_text"], zoo["report_text"]):
        assert [needle for needle in identifier_needles() if needle.decode() in text] == []


def test_manifest_errors_name_no_engine_internals_and_only_dictionary_tags(zoo):
    for entry in zoo["manifest"]["errors"]:
        assert "failed:" not in entry["error"] and "\n" not in entry["error"]
        assert len(entry["error"]) < 300
        assert_only_dictionary_tags(entry["error"])
    # the tag the damaged name length makes a reader see spells "on^A" of the name
    assert "6E6F" not in zoo["manifest_text"].upper()


def assert_only_dictionary_tags(message: str) -> None:
    for group, element in re.findall(r"\(([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\)", message):
        assert dictionary_has_tag(int(group + element, 16)), message


# A session of files without a file header: verification must read them (force) too.
def test_verification_reads_sources_without_a_file_header(tmp_path, profile_v1):
    source = tmp_path / "source"
    source.mkdir()
    for number in (50, 51):  # an old PACS export: data sets only, the name typed into comments
        (source / f"IM{number}").write_bytes(without_file_header(
            planted("MR_small_implicit.dcm", number, plant_image_comments)))
    staged, manifest = tmp_path / "staged", tmp_path / "m.json"
    assert stage_session(source, profile_v1, staged, manifest)["counts"]["staged"] == 2
    report = verify_session(source, staged, manifest, profile_v1, LABELS, tmp_path / "r.json")
    assert_report_unchanged("bad_dicom", "source without a file header", tmp_path / "r.json",
                            tmp_path)
    assert report["identifier_values_searched"] == len(FAKE_IDENTIFIERS)
    assert report["status"] == "fail"
    assert {finding["check"] for finding in report["findings"]} >= {"identifier_leak"}


# ---- files that cannot be read ----------------------------------------------------------------

@pytest.fixture
def profile_engine(profile_v1) -> Context:
    return make_engine(profile_v1.read_text())


STAGE = """
import json, sys
from deidpipe.stage import stage_session
source, profile, out = sys.argv[1:4]
manifest = stage_session(source, profile, out + "/staged", out + "/m.json")
print(json.dumps(manifest["errors"]))
"""


def test_file_without_read_permission(open_folder, profile_v1):
    # As an unprivileged user (as 'nobody' when the tests run as root): root reads anything.
    source = open_folder / "source"
    source.mkdir()
    source.chmod(0o755)  # modes set: the tests' umask may be owner-only
    (source / "readable.dcm").write_bytes(mr(41))
    locked = source / "locked.dcm"
    locked.write_bytes(mr(40))
    profile = open_folder / "profile.yaml"
    profile.write_text(profile_v1.read_text())
    out = open_folder / "out"
    out.mkdir()
    out.chmod(0o777)  # the unprivileged user writes the staged copy here
    for path in (source / "readable.dcm", profile):
        path.chmod(0o644)
    locked.chmod(0)
    result = run_unprivileged(STAGE, str(source), str(profile), str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"source": "locked.dcm", "error": (
        "cannot be read (Permission denied): check that the file is still there and that you "
        "may read it")}]
    assert (out / "staged").is_dir()  # the readable file was staged


def test_file_that_vanished_before_reading(tmp_path, profile_engine):
    # Listed, then removed (another process, a network share dropping): a real failed open.
    work = tmp_path / "work"
    work.mkdir()
    outcome = deidentify_file(profile_engine, tmp_path / "gone.dcm", "gone.dcm",
                              work / ".0.part")
    assert (outcome.kind, outcome.detail) == ("error", (
        "cannot be read (No such file or directory): check that the file is still there and "
        "that you may read it"))
    assert list(work.iterdir()) == []


def test_folder_named_like_a_file_fifo_and_outside_link(tmp_path, profile_v1):
    source = tmp_path / "source"
    (source / "series.dcm").mkdir(parents=True)  # a folder named like a file: searched
    (source / "series.dcm" / "IM1.dcm").write_bytes(mr(41))
    (source / "empty.dcm").mkdir()  # an empty folder named like a file: nothing to stage
    os.mkfifo(source / "pipe.dcm")
    outside = tmp_path / "outside.dcm"
    outside.write_bytes(mr(42))
    os.symlink(outside, source / "link.dcm")
    manifest = stage_session(source, profile_v1, tmp_path / "staged", tmp_path / "m.json")
    assert [entry["source"] for entry in manifest["files"]] == ["series.dcm/IM1.dcm"]
    assert manifest["skipped"] == [
        {"source": "link.dcm", "reason": "symbolic link (links are not followed)"},
        {"source": "pipe.dcm", "reason": "not a regular file"}]
    assert manifest["errors"] == []


# ---- a write that fails: the session fails and leaves nothing behind -------------------------

WRITE_FAILURE = """
import resource, signal, sys
from deidpipe.stage import stage_session
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))  # as a full disk: writes fail
try:
    stage_session(*sys.argv[1:5])
except OSError as error:
    print("OSError", error.errno)
"""


def test_failed_write_fails_the_session_and_removes_the_work_folder(tmp_path, profile_v1):
    source = tmp_path / "source"
    source.mkdir()
    (source / "small.dcm").write_bytes(mr(43))
    (source / "large.dcm").write_bytes(planted("CT_small.dcm", 44))  # 39 kB > the 20 kB limit
    before = tree_digest(source)
    staging = tmp_path / "staging"
    staging.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", WRITE_FAILURE, str(source), str(profile_v1),
         str(staging / "ses"), str(tmp_path / "m.json")],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.stdout.strip() == "OSError 27", result.stderr  # EFBIG
    assert list(staging.iterdir()) == []  # no work folder, no half-staged session
    assert not (tmp_path / "m.json").exists()
    assert tree_digest(source) == before


def test_inputs_are_what_they_claim():
    # The expected staged encodings are real transfer syntaxes; no file name holds a value
    # (the manifest may name every source file).
    assert all(UID(syntax).is_transfer_syntax for _make, syntax in STAGED_KINDS.values())
    assert not any(value in name for name in [*STAGED_KINDS, *ERROR_KINDS]
                   for value in FAKE_IDENTIFIERS.values())
    assert without_file_header(mr(60))[:2] == b"\x08\x00"  # the data set: group 0008 first
