"""A generator of synthetic sessions with one kind of leak planted in each, plus clean controls.

Every session starts from the same clean synthetic data (pydicom's test files with the made-up
identifiers of ``deidpipe.synthetic``); a *plant* changes each dataset before it is written,
an *after* step changes the written files, and a label can be set as a coordinator might have
typed it. Each case names the check and severity verification must give it.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import SecondaryCaptureImageStorage

from deidpipe.synthetic import (
    FAKE_IDENTIFIERS,
    SeriesSpec,
    SessionSpec,
    build_session,
    plant_image_comments,
    plant_private_tag,
)

NAME = FAKE_IDENTIFIERS["PatientName"]  # "Testperson^Alice^Q"
FAMILY, GIVEN = NAME.split("^")[:2]


@dataclass
class Case:
    """One planted kind (or a clean control: expected_check is empty)."""

    kind: str
    expected_check: str = ""
    expected_severity: str = ""
    expected_attribute: str = ""
    plant: Callable[[Dataset], None] | None = None
    after: Callable[[Path], None] | None = None
    subject: str = "sub-01"
    series: list[SeriesSpec] = field(
        default_factory=lambda: [SeriesSpec("MR_small.dcm", "T1w", 2)])
    # Changes to the made-up identifiers planted in every file.
    identifiers: dict[str, str] = field(default_factory=dict)

    @property
    def is_control(self) -> bool:
        return not self.expected_check


def _nested_sequence_item(dataset: Dataset) -> None:
    item = Dataset()
    item.RequestedProcedureDescription = "for accession " + FAKE_IDENTIFIERS["AccessionNumber"]
    inner = Dataset()
    inner.CodeMeaning = "requested for " + FAKE_IDENTIFIERS["PatientID"].lower()
    item.ReasonForRequestedProcedureCodeSequence = Sequence([inner])
    dataset.RequestAttributesSequence = Sequence([item])


def _study_description(dataset: Dataset) -> None:
    dataset.StudyDescription = f"BRAIN^RESEARCH {FAKE_IDENTIFIERS['PatientID']}"


def _swapped_lower_case_name(dataset: Dataset) -> None:
    dataset.PerformedProcedureStepDescription = f"{GIVEN.lower()} {FAMILY.lower()} follow-up"


def _birth_date_other_format(dataset: Dataset) -> None:
    birth = FAKE_IDENTIFIERS["PatientBirthDate"]  # YYYYMMDD
    dataset.AdditionalPatientHistory = ""
    dataset.ImageComments = f"DOB {birth[4:6]}/{birth[6:8]}/{birth[:4]}"


def _after_pixel_data(session_dir: Path) -> None:
    for path in sorted(session_dir.rglob("*.dcm")):
        with open(path, "ab") as handle:
            handle.write(b"\x00\x00ARCHIVE-NOTE " + FAKE_IDENTIFIERS["PatientID"].encode())


def _burned_in_annotation(dataset: Dataset) -> None:
    dataset.BurnedInAnnotation = "YES"


def _secondary_capture(dataset: Dataset) -> None:
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    dataset.Modality = "OT"
    dataset.ConversionType = "WSD"


def _name_part_alone(dataset: Dataset) -> None:
    dataset.ImageComments = f"ask {GIVEN} about the headphones"


def _staff_name(dataset: Dataset) -> None:
    dataset.OperatorsName = "Invented^Technologist"


def _telephone_in_text(dataset: Dataset) -> None:
    dataset.ImageComments = "call " + FAKE_IDENTIFIERS["PatientTelephoneNumbers"].replace("-", " ")


def _name_in_binary_private_tag(dataset: Dataset) -> None:
    block = dataset.private_block(0x0031, "INVENTED VENDOR", create=True)
    block.add_new(0x01, "OB", b"\x01\x02" + NAME.upper().encode() + b"\x00")


def _series_description_name(dataset: Dataset) -> None:
    dataset.SeriesDescription = f"T1w {GIVEN} {FAMILY}"


CASES = [
    Case("private tag", "identifier_leak", "fail", "PatientID", plant=plant_private_tag),
    Case("nested sequence item", "identifier_leak", "fail", "AccessionNumber",
         plant=_nested_sequence_item),
    Case("ImageComments", "identifier_leak", "fail", "PatientName",
         plant=plant_image_comments),
    Case("StudyDescription", "identifier_leak", "fail", "PatientID", plant=_study_description),
    Case("swapped-order lower-case name", "identifier_leak", "fail", "PatientName",
         plant=_swapped_lower_case_name),
    Case("date of birth in another format", "identifier_leak", "fail", "PatientBirthDate",
         plant=_birth_date_other_format),
    Case("identifier after the pixel data", "identifier_leak", "fail", "PatientID",
         after=_after_pixel_data),
    Case("BurnedInAnnotation YES", "burned_in_annotation", "fail",
         plant=_burned_in_annotation),
    Case("secondary capture", "burned_in_risk", "warn", plant=_secondary_capture),
    Case("subject label equal to PatientID", "labels", "fail", "PatientID",
         subject=FAKE_IDENTIFIERS["PatientID"]),
    Case("name part on its own", "name_part", "warn", "PatientName", plant=_name_part_alone),
    Case("staff name kept", "staff_name", "warn", "OperatorsName", plant=_staff_name),
    Case("telephone with other separators", "identifier_leak", "fail",
         "PatientTelephoneNumbers", plant=_telephone_in_text),
    Case("name in a binary private tag", "identifier_leak", "fail", "PatientName",
         plant=_name_in_binary_private_tag),
    Case("name in the acquisition folder name", "identifier_leak", "fail", "PatientName",
         plant=_series_description_name),
]
CONTROLS = [
    Case("clean MR"),
    Case("clean CT with vendor private tags",
         series=[SeriesSpec("CT_small.dcm", "CT head", 3)]),
    Case("clean two-series MR", series=[SeriesSpec("MR_small.dcm", "T1w MPRAGE", 3),
                                        SeriesSpec("MR_small.dcm", "BOLD rest", 2)]),
    # Research sites often use short numbers as patient IDs: they occur by chance in UIDs
    # ('1.2.840.10008...'), sizes and private numbers, and must not fail a clean session.
    Case("clean CT with short numeric IDs", series=[SeriesSpec("CT_small.dcm", "CT head", 3)],
         identifiers={"PatientID": "840", "OtherPatientIDs": "1001", "AccessionNumber": "10008"}),
    Case("clean MR with a common-word name", identifiers={"PatientName": "Head^Brain"}),
]


def build_case(case: Case, source_dir: Path) -> None:
    """Write the case's source session below ``source_dir``."""
    identifiers = {**FAKE_IDENTIFIERS, **case.identifiers}
    build_session(SessionSpec(case.kind, case.series, identifiers=identifiers, plant=case.plant),
                  source_dir)
    if case.after:
        case.after(source_dir)
