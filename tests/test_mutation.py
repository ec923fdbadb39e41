"""Mutation test: random byte flips anywhere in a session's files (the header included) never
make staging or verification crash, and every source file stays accounted for."""

import os
import random
import re
import shutil
import struct
from collections import Counter
from pathlib import Path

import pytest
from pydicom.datadict import dictionary_has_tag

from conftest import REPO, identifier_needles, tree_digest
from deidpipe.profile import generate_profile
from deidpipe.stage import stage_session
from deidpipe.synthetic import SeriesSpec, SessionSpec, build_session
from deidpipe.verify import verify_session
from expected_reports import assert_report_unchanged

MUTANTS = 60
SEED = 20240404
LABELS = {"group": "g", "project": "p", "subject": "sub-01", "session": "ses-01"}
HEADER_BYTES = 1600  # where the elements before the pixel data are, in these templates


def mutate(path: Path, rng: random.Random) -> int:
    """Flip 1-20 bytes of the file in place (half of them in its header); the number flipped."""
    data = bytearray(path.read_bytes())
    flips = rng.randint(1, 20)
    for _ in range(flips):
        end = min(len(data), HEADER_BYTES) if rng.random() < 0.5 else len(data)
        data[rng.randrange(end)] ^= rng.randint(1, 255)
    path.write_bytes(bytes(data))
    return flips


@pytest.fixture(scope="module")
def clean_session(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("mutation")
    source = root / "clean"
    build_session(SessionSpec("m", [SeriesSpec("MR_small.dcm", "T1w", 2),
                                    SeriesSpec("MR_small_implicit.dcm", "T2w", 2),
                                    SeriesSpec("MR_small_bigendian.dcm", "PD", 1),
                                    SeriesSpec("MR_small_RLE.dcm", "RLE", 1),
                                    SeriesSpec("SC_rgb_jpeg_dcmtk.dcm", "JPEG", 1),
                                    SeriesSpec("image_dfl.dcm", "deflated", 1),
                                    SeriesSpec("rtdose.dcm", "multi-frame", 1),
                                    SeriesSpec("CT_small.dcm", "CT", 1)]), source)
    # An old PACS export's file: the data set alone, no preamble, 'DICM' or file meta.
    with_header = source / "series02" / "IM0002.dcm"
    data = with_header.read_bytes()
    (group_length,) = struct.unpack("<I", data[140:144])
    (source / "series02" / "IM0002").write_bytes(data[144 + group_length:])
    with_header.unlink()
    profile = root / "profile.yaml"
    profile.write_text(generate_profile(REPO / "profiles" / "PennBrainScienceCenter"))
    return source, profile


def every_path_below(folder: Path) -> list[str]:
    """Every file and link below ``folder``, relative, found without the product's own listing
    (the expected side of the comparison must not come from the code under test)."""
    found = []
    for parent, folders, files in os.walk(folder):
        links = [name for name in folders if os.path.islink(os.path.join(parent, name))]
        for name in [*files, *links]:
            found.append(Path(parent, name).relative_to(folder).as_posix())
    return sorted(found)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on damaged values
def test_mutants_never_crash_and_every_file_is_accounted_for(clean_session, tmp_path):
    clean, profile = clean_session
    dicom_files = sorted(path.relative_to(clean) for path in clean.rglob("*") if path.is_file())
    outcomes: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for number in range(MUTANTS):
        rng = random.Random(SEED + number)
        source = tmp_path / f"mutant{number:02d}" / "source"
        shutil.copytree(clean, source)
        mutated = rng.sample(dicom_files, rng.randint(1, 3))
        for relative in mutated:
            mutate(source / relative, rng)
        before = tree_digest(source)
        staged = tmp_path / f"mutant{number:02d}" / "staging" / "ses-01"
        manifest_path = staged.with_name("ses-01.manifest.json")
        where = f"mutant {number} (seed {SEED + number}, files {[str(p) for p in mutated]})"

        manifest = stage_session(source, profile, staged, manifest_path)
        report = verify_session(source, staged, manifest_path, profile, LABELS,
                                tmp_path / f"mutant{number:02d}" / "report.json")
        assert_report_unchanged("mutation", f"mutant{number:02d}",
                                tmp_path / f"mutant{number:02d}" / "report.json", tmp_path)

        assert tree_digest(source) == before, where
        listed = sorted(entry["source"] for part in ("files", "skipped", "errors")
                        for entry in manifest[part])
        assert listed == every_path_below(source), where
        assert not [finding for finding in report["findings"]
                    if "neither staged nor listed" in finding["message"]], where
        assert every_path_below(staged) == sorted(entry["staged"]
                                                   for entry in manifest["files"]), where
        assert sorted(path.name for path in staged.parent.iterdir()) == [
            "ses-01", "ses-01.manifest.json", "ses-01.review.html"], where
        text = manifest_path.read_text()
        assert [needle for needle in identifier_needles() if needle.decode() in text] == [], where
        for group, element in re.findall(r"\(([0-9A-F]{4}),([0-9A-F]{4})\)", text):
            assert dictionary_has_tag(int(group + element, 16)), where  # not bytes of a value
        if manifest["errors"]:
            assert report["status"] == "fail", where
        outcomes.update(entry["source"] in {str(p) for p in mutated} and kind
                        for kind, part in (("staged", "files"), ("skipped", "skipped"),
                                           ("error", "errors"))
                        for entry in manifest[part])
        statuses[report["status"]] += 1
    del outcomes[False]  # files that were not mutated
    print(f"\nmutation: {MUTANTS} mutant sessions; mutated files: {outcomes['staged']} staged, "
          f"{outcomes['error']} errors, {outcomes['skipped']} skipped; verification: "
          f"{statuses['pass']} pass, {statuses['warn']} warn, {statuses['fail']} fail")
    assert sum(outcomes.values()) > MUTANTS
    assert outcomes["error"] > 0 and statuses["fail"] > 0  # the flips did break files


def test_verification_reports_a_staged_file_with_a_damaged_sequence(clean_session, tmp_path):
    # Found by the mutants (before staging checked implicit VR sequences): a staged file whose
    # ReferencedRTPlanSequence length is 4 bytes too long, as a file edited after staging.
    clean, profile = clean_session
    source = tmp_path / "source"
    shutil.copytree(clean / "series07", source)  # the multi-frame RT dose, implicit VR
    staged, manifest_path = tmp_path / "staged", tmp_path / "m.json"
    manifest = stage_session(source, profile, staged, manifest_path)
    path = staged / manifest["files"][0]["staged"]
    data = bytearray(path.read_bytes())
    at = data.index(bytes.fromhex("0c30 0200")) + 4  # (300C,0002), its 4-byte length
    data[at:at + 4] = (int.from_bytes(data[at:at + 4], "little") + 4).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    report = verify_session(source, staged, manifest_path, profile, LABELS, tmp_path / "r.json")
    assert_report_unchanged("mutation", "damaged sequence", tmp_path / "r.json", tmp_path)
    assert report["status"] == "fail"
    assert {finding["check"] for finding in report["findings"]} >= {"inventory", "integrity"}


def test_verification_reports_a_damaged_element_after_the_pixel_data(clean_session, tmp_path):
    # Found by the mutants: a flipped byte in DataSetTrailingPadding's VR. Staging copies what
    # follows the pixel data as it is (Flywheel stores it so); verification must say so.
    clean, profile = clean_session
    source = tmp_path / "source"
    shutil.copytree(clean / "series01", source)
    with open(sorted(source.glob("*.dcm"))[0], "ab") as handle:
        handle.write(b"\xfc\xff\xfc\xffOc\0\0" + struct.pack("<I", 4) + b"\0" * 4)
    staged, manifest_path = tmp_path / "staged", tmp_path / "m.json"
    assert stage_session(source, profile, staged, manifest_path)["counts"]["error"] == 0
    report = verify_session(source, staged, manifest_path, profile, LABELS, tmp_path / "r.json")
    assert_report_unchanged("mutation", "damaged element after the pixel data",
                            tmp_path / "r.json", tmp_path)
    assert report["status"] == "fail"
    assert "integrity" in {finding["check"] for finding in report["findings"]}
