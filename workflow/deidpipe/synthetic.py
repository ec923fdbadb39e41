"""Synthetic DICOM sessions for the demo and the tests.

Built from pydicom's bundled test files with made-up identifiers planted. Deterministic: the
same call writes the same bytes, so the demo data in the repository can be rebuilt exactly.
Never put real patient data here.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

# Made-up identifiers: distinctive, so a test can search every output file for them.
FAKE_IDENTIFIERS = {
    "PatientName": "Testperson^Alice^Q",
    "PatientID": "MRN40417723",
    "PatientBirthDate": "19580923",
    "AccessionNumber": "ACC88310452",
    "OtherPatientIDs": "ALT55501999",
    "PatientAddress": "42 Imaginary Lane, Nowhereville",
    "PatientTelephoneNumbers": "555-0147-3321",
    "ReferringPhysicianName": "Fakedoctor^Bartholomew",
    "PerformingPhysicianName": "Madeup^Cornelius",
}
UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's documented example root


@dataclass
class SeriesSpec:
    """One series of a synthetic session."""

    template: str  # a pydicom test file name, e.g. "MR_small.dcm"
    description: str
    files: int
    # pydicom's MR_small says DERIVED\SECONDARY; scanner series are ORIGINAL\PRIMARY.
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "OTHER")
    # Called on each dataset of this series (after the session's own plant).
    plant: Callable[[Dataset], None] | None = None


@dataclass
class SessionSpec:
    """One synthetic session: its series and the identifiers planted in every file."""

    name: str
    series: list[SeriesSpec]
    identifiers: dict[str, str] = field(default_factory=lambda: dict(FAKE_IDENTIFIERS))
    extra_files: dict[str, bytes] = field(default_factory=dict)
    # Called on each dataset after the identifiers are planted (to plant a leak, say).
    plant: Callable[[Dataset], None] | None = None


def _uid(*parts: object) -> str:
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=[str(part) for part in parts])


def build_session(spec: SessionSpec, session_dir: str | Path) -> list[Path]:
    """Write the session's files below ``session_dir``; return the DICOM paths written."""
    session_dir = Path(session_dir)
    session_dir.mkdir(parents=True, exist_ok=True)
    written = []
    study_uid = _uid(spec.name, "study")
    for series_number, series in enumerate(spec.series, start=1):
        series_uid = _uid(spec.name, "series", series_number)
        series_dir = session_dir / f"series{series_number:02d}"
        series_dir.mkdir(exist_ok=True)
        for instance in range(1, series.files + 1):
            dataset = dcmread(get_testdata_file(series.template))
            for keyword, value in spec.identifiers.items():
                setattr(dataset, keyword, value)
            dataset.StudyInstanceUID = study_uid
            dataset.SeriesInstanceUID = series_uid
            dataset.SOPInstanceUID = _uid(spec.name, series_number, instance)
            dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
            dataset.SeriesNumber = series_number
            dataset.InstanceNumber = instance
            dataset.SeriesDescription = series.description
            dataset.ImageType = list(series.image_type)
            if spec.plant:
                spec.plant(dataset)
            if series.plant:
                series.plant(dataset)
            path = series_dir / f"IM{instance:04d}.dcm"
            dataset.save_as(path, enforce_file_format=True)
            written.append(path)
    for name, content in spec.extra_files.items():
        (session_dir / name).write_bytes(content)
    return written


def plant_image_comments(dataset: Dataset) -> None:
    """A technologist typed the patient's name into a free-text field the profile keeps."""
    dataset.ImageComments = "scan of " + FAKE_IDENTIFIERS["PatientName"].replace("^", " ")


def plant_private_tag(dataset: Dataset) -> None:
    """A vendor copied the patient ID into a private tag the profile leaves untouched."""
    block = dataset.private_block(0x0029, "DEMO VENDOR", create=True)
    block.add_new(0x10, "LO", FAKE_IDENTIFIERS["PatientID"])


def plant_demo_leaks(dataset: Dataset) -> None:
    """The demo's failing session: a name in ImageComments and an ID in a private tag."""
    plant_image_comments(dataset)
    plant_private_tag(dataset)


def make_dose_screen_capture(dataset: Dataset) -> None:
    """A scanner's dose summary saved as a screen capture: text is usually burned in."""
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    dataset.ConversionType = "WSD"


def demo_sessions() -> list[SessionSpec]:
    """The demo shipped in ``demo/dicom``: a clean session, one that warns (vendor private
    tags and a dose screen capture that may hold burned-in text), one with planted leaks."""
    return [
        SessionSpec("sub-001_ses-01", [SeriesSpec("MR_small.dcm", "T1w MPRAGE", 3),
                                       SeriesSpec("MR_small.dcm", "BOLD rest", 2)],
                    extra_files={"scanner_notes.txt": b"Console export notes (not DICOM).\n"}),
        SessionSpec("sub-002_ses-01", [
            SeriesSpec("CT_small.dcm", "CT head", 3),
            SeriesSpec("CT_small.dcm", "Dose Report", 1,
                       image_type=("DERIVED", "SECONDARY", "SCREEN SAVE"),
                       plant=make_dose_screen_capture)]),
        SessionSpec("sub-003_ses-01", [SeriesSpec("MR_small.dcm", "T2w", 2)],
                    plant=plant_demo_leaks),
    ]


def build_demo(dicom_root: str | Path) -> None:
    """Rebuild ``demo/dicom`` from pydicom's test files."""
    for spec in demo_sessions():
        build_session(spec, Path(dicom_root) / spec.name)
