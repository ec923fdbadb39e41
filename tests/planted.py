"""A generator of synthetic sessions with one kind of leak planted in each, plus clean controls.

Every session starts from the same clean synthetic data (pydicom's test files with the made-up
identifiers of ``deidpipe.synthetic``); a *plant* changes each dataset before it is written,
an *after* step changes the written files, and a label can be set as a coordinator might have
typed it. Each case names the check and severity verification must give it.
"""

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import SecondaryCaptureImageStorage

from deidpipe.synthetic import (
    FAKE_IDENTIFIERS,
    SeriesSpec,
    SessionSpec,
    build_session,
    encapsulated_document_dataset,
    make_cda,
    make_pdf,
    plant_image_comments,
    plant_private_tag,
)
from deidpipe.synthetic_images import image_dataset

NAME = FAKE_IDENTIFIERS["PatientName"]  # "Testperson^Alice^Q"
FAMILY, GIVEN, MIDDLE = NAME.split("^")[:3]
PATIENT_ID = FAKE_IDENTIFIERS["PatientID"]  # "MRN40417723"
BIRTH = FAKE_IDENTIFIERS["PatientBirthDate"]  # "19580923"
V1_PROFILE = "PennBrainScienceCenter"
V3_PROFILE = "PennBrainScienceCenter_v3.0"  # keeps PatientAge, computed from the birth date


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
    profile: str = V1_PROFILE  # a folder under profiles/
    # Other findings the case must (also) give: (check, severity) pairs.
    also_expected: tuple[tuple[str, str], ...] = ()

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


def _set(keyword: str, value: str) -> Callable[[Dataset], None]:
    """A plant that writes one value into one attribute the profile keeps."""
    def plant(dataset: Dataset) -> None:
        setattr(dataset, keyword, value)
    return plant


def _private_text(value: str, vr: str = "LO") -> Callable[[Dataset], None]:
    def plant(dataset: Dataset) -> None:
        block = dataset.private_block(0x0033, "INVENTED NOTES", create=True)
        block.add_new(0x10, vr, value)
    return plant


def _append_after_pixel_data(data: bytes) -> Callable[[Path], None]:
    def after(session_dir: Path) -> None:
        for path in sorted(session_dir.rglob("*.dcm")):
            with open(path, "ab") as handle:
                handle.write(data)
    return after


def _trailing_padding(text: str) -> Callable[[Dataset], None]:
    """DataSetTrailingPadding after the pixel data: an element like any other."""
    def plant(dataset: Dataset) -> None:
        dataset.add_new(0xFFFCFFFC, "OB", b"\0\0" + text.encode() + b"\0\0")
    return plant


def _document(document: Callable[[], bytes], mime_type: str) -> Callable[[Path], None]:
    """Adds an encapsulated document (a scanned-in form, a report) to the session."""
    def after(session_dir: Path) -> None:
        dataset = encapsulated_document_dataset(document(), mime_type,
                                                patient=FAKE_IDENTIFIERS, uid_seed=mime_type)
        folder = session_dir / "documents"
        folder.mkdir(exist_ok=True)
        dataset.save_as(folder / "DOC0001.dcm", enforce_file_format=True)
    return after


def _burned_in(kind: str, lines: list[tuple[int, int, str]], frames: int = 1,
               text_frame: int | None = None) -> Callable[[Path], None]:
    """Adds an image of ``kind`` (see deidpipe.synthetic_images) with text in its pixels."""
    def after(session_dir: Path) -> None:
        dataset = image_dataset(kind, lines, patient=FAKE_IDENTIFIERS, uid_seed=kind,
                                frames=frames, text_frame=text_frame)
        folder = session_dir / "burned_in"
        folder.mkdir(exist_ok=True)
        dataset.save_as(folder / "IM0001.dcm", enforce_file_format=True)
    return after


def _dicomdir(session_dir: Path) -> None:
    """A DICOMDIR beside the images (it names patients; staging leaves it out)."""
    shutil.copy(get_testdata_file("DICOMDIR"), session_dir / "DICOMDIR")


def _acquisition_number_equal_to_id(dataset: Dataset) -> None:
    dataset.AcquisitionNumber = 4321  # the research ID below, by chance


def _cases(kind: str, check: str, attribute: str, plants: list[Callable[[Dataset], None]],
           **options: object) -> list["Case"]:
    """Several variants of one class of leak, numbered: a check tuned to one fails some."""
    return [Case(f"{kind} ({number}/{len(plants)})", check, "fail", attribute, plant=plant,
                 **options)  # type: ignore[arg-type]
            for number, plant in enumerate(plants, start=1)]


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
    Case("staff name kept", "staff_name", "fail", "OperatorsName", plant=_staff_name),
    Case("telephone with other separators", "identifier_leak", "fail",
         "PatientTelephoneNumbers", plant=_telephone_in_text),
    Case("name in a binary private tag", "identifier_leak", "fail", "PatientName",
         plant=_name_in_binary_private_tag),
    Case("name in the acquisition folder name", "identifier_leak", "fail", "PatientName",
         plant=_series_description_name),
    # An identifier glued to other text.
    *_cases("glued MRN", "identifier_leak", "PatientID", [
        _set("ImageComments", f"PATIENT#{PATIENT_ID}"),
        _set("StudyComments", f"seen{PATIENT_ID}today"),
        _private_text(f"REF{PATIENT_ID}/A"),
    ]),
    Case("glued accession number", "identifier_leak", "fail", "AccessionNumber",
         plant=_set("RequestedProcedureDescription",
                    "ACCESSION" + FAKE_IDENTIFIERS["AccessionNumber"])),
    Case("glued numeric ID", "identifier_leak", "fail", "PatientID",
         plant=_set("ImageComments", "MRN40417723"), identifiers={"PatientID": "40417723"}),
    Case("glued MRN after the pixel data", "identifier_leak", "fail", "PatientID",
         after=_append_after_pixel_data(b"\0\0ARCHIVEDMRN" + PATIENT_ID.encode())),
    # Names with initials are told from words by their capitals: bytes no element holds too.
    *[Case(f"name with initials after the pixel data ({number}/3)", "identifier_leak", "fail",
           "PatientName", after=_append_after_pixel_data(data))
      for number, data in enumerate([b"\0\0Testperson, A. Q.\0",
                                     b"\0\0REVIEWED A Q TESTPERSON\0",
                                     b"\0\0for A. Testperson, study copy\0"], start=1)],
    # Other values written with mixed separators, in bytes no element holds.
    *[Case(f"mixed separators after the pixel data ({number}/4)", "identifier_leak", "fail",
           attribute, after=_append_after_pixel_data(data))
      for number, (attribute, data) in enumerate([
          ("PatientBirthDate", b"\0\0DOB: September 23, 1958\0"),
          ("PatientAddress", b"\0\0home 42 Imaginary Lane, Nowhereville\0"),
          ("PatientTelephoneNumbers", b"\0\0call (555) 0147-3321\0"),
          ("PatientName", b"\0\0Alice Q. Testperson\0")], start=1)],
    # Dates of birth in words.
    *_cases("date of birth with a month name", "identifier_leak", "PatientBirthDate", [
        _set("ImageComments", "DOB 23-Sep-1958"),
        _set("RequestedProcedureDescription", "born September 23, 1958"),
        _set("StudyDescription", "research Sep 23 1958"),
        _set("ImageComments", "d.o.b. 23 SEP 58"),
        _private_text("23rd Sept 1958"),
    ]),
    # Initials with the family name.
    *_cases("initials and family name", "identifier_leak", "PatientName", [
        _set("ImageComments", f"{GIVEN[0]}. {FAMILY}"),
        _set("PerformedProcedureStepDescription", f"{FAMILY}, {GIVEN[0]}."),
        _set("ImageComments", f"{GIVEN[0]} {MIDDLE[0]} {FAMILY.upper()}"),
        _private_text(f"{GIVEN} {MIDDLE}. {FAMILY}"),
    ]),
    # Staff names.
    *_cases("physician name left in text", "staff_name", "ReferringPhysicianName", [
        _set("ImageComments", "referred by Fakedoctor Bartholomew"),
        _set("StudyComments", "Dr. B. Fakedoctor"),
        _private_text("FAKEDOCTOR^BARTHOLOMEW", "PN"),
    ]),
    # Encapsulated documents: text compressed inside a PDF, or XML; each is also listed.
    *[Case(f"encapsulated document ({number}/3)", "identifier_leak", "fail", attribute,
           after=after, also_expected=(("encapsulated_document", "warn"),))
      for number, (attribute, after) in enumerate([
          ("PatientName", _document(lambda: make_pdf([f"Patient: {GIVEN} {FAMILY}",
                                                      "Consent form"]), "application/pdf")),
          ("PatientID", _document(lambda: make_pdf(["Consent form"], author=PATIENT_ID),
                                  "application/pdf")),
          ("PatientName", _document(lambda: make_cda(GIVEN, FAMILY, PATIENT_ID, BIRTH),
                                    "text/xml")),
      ], start=1)],
    # Data after the pixel data, in a trailing padding element.
    Case("ID in the trailing padding element", "identifier_leak", "fail", "PatientID",
         plant=_trailing_padding(f"ARCHIVE {PATIENT_ID}")),
    # Ages over 89, kept by the v3.0 profile (computed from the birth date, or as the source
    # has it when there is no birth date).
    Case("age over 89 computed from the birth date", "patient_age", "fail", profile=V3_PROFILE,
         identifiers={"PatientBirthDate": "19100101"}),
    *[Case(f"age over 89 written as {age}", "patient_age", "fail", profile=V3_PROFILE,
           identifiers={"PatientBirthDate": "", "PatientAge": age})
      for age in ("090Y", "095Y", "1140M", "4800W", "33000D")],
    # Text burned into the pixels, read by OCR and matched against the source's headers.
    *[Case(f"burned-in {what} ({kind})", "burned_in_text", "fail", attribute,
           after=_burned_in(kind, lines, **options))  # type: ignore[arg-type]
      for what, kind, attribute, lines, options in [
          ("name", "MR", "PatientName", [(8, 8, "TESTPERSON^ALICE")], {}),
          ("ID", "CT", "PatientID", [(8, 230, "ID: MRN40417723")], {}),
          ("date of birth", "US", "PatientBirthDate", [(120, 8, "DOB 23-SEP-1958")], {}),
          ("name, initials", "US_YBR", "PatientName", [(8, 8, "A. TESTPERSON")], {}),
          ("ID", "SC", "PatientID", [(8, 8, "PATIENT MRN40417723")], {}),
          ("date of birth", "MR_JPEG2000", "PatientBirthDate", [(8, 8, "09/23/1958")], {}),
          ("name", "MONOCHROME1", "PatientName", [(8, 230, "Testperson, Alice")], {}),
          ("ID", "PALETTE", "PatientID", [(8, 8, "MRN40417723")], {}),
          ("name on one frame", "MR_MULTIFRAME", "PatientName",
           [(8, 8, "TESTPERSON ALICE Q")], {"frames": 5, "text_frame": 2}),
      ]],
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
    # A family name that is also a word of the series descriptions.
    Case("clean MR, family name used in series descriptions",
         series=[SeriesSpec("MR_small.dcm", "T1 AXIAL 5mm", 2),
                 SeriesSpec("MR_small.dcm", "AX FLAIR", 1)],
         identifiers={"PatientName": "Axial^Tom", "OperatorsName": ""}),
    Case("clean MR, short numeric ID equal to AcquisitionNumber",
         identifiers={"PatientID": "4321"}, plant=_acquisition_number_equal_to_id),
    Case("clean MR with a DICOMDIR in the folder", after=_dicomdir),
    # Lower-case letters are words, not initials, beside a family name written alone.
    Case("clean MR, a note after the pixel data", after=_append_after_pixel_data(
        b"\0\0a scan by the site, q. reviewed\0")),
    Case("clean MR with a clean encapsulated PDF",
         after=_document(lambda: make_pdf(["Scanner quality report", "Coil check passed"]),
                         "application/pdf")),
    Case("clean MR with a scanned (image only) PDF",
         after=_document(lambda: make_pdf([], image_only=True), "application/pdf")),
    Case("clean MR with a clean CDA document",
         after=_document(lambda: make_cda("", "", "", "", note="Protocol checklist complete"),
                         "text/xml")),
    Case("clean MR, v3.0 profile keeps an age of 89", profile=V3_PROFILE,
         identifiers={"PatientBirthDate": "", "PatientAge": "089Y"}),
    Case("clean MR, v3.0 profile, 999 months", profile=V3_PROFILE,
         identifiers={"PatientBirthDate": "", "PatientAge": "999M"}),
    # Pixels with no identifier: nothing, orientation letters, sequence names, a scale bar.
    Case("clean MR image without text", after=_burned_in("MR", [])),
    Case("clean MR with orientation letters",
         after=_burned_in("MR", [(4, 120, "R"), (244, 120, "L"), (124, 4, "A")])),
    Case("clean MR with its sequence name", after=_burned_in("MR", [(8, 230, "T1 AX 5mm")])),
    Case("clean CT with a scale bar", after=_burned_in("CT", [(180, 236, "|----|----| 5 cm")])),
    Case("clean ultrasound without text", after=_burned_in("US", [])),
]


def build_case(case: Case, source_dir: Path) -> None:
    """Write the case's source session below ``source_dir``."""
    identifiers = {**FAKE_IDENTIFIERS, **case.identifiers}
    build_session(SessionSpec(case.kind, case.series, identifiers=identifiers, plant=case.plant),
                  source_dir)
    if case.after:
        case.after(source_dir)
