"""Synthetic DICOM sessions for the demo and the tests.

Built from pydicom's bundled test files with made-up identifiers planted. Deterministic: the
same call writes the same bytes, so the demo data in the repository can be rebuilt exactly.
Never put real patient data here.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

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
    """A scanner's dose summary saved as a screen capture: its text is burned in (dose
    figures, no identifier: the review page shows it for a person to read)."""
    from deidpipe.synthetic_images import render_text  # it builds on this module

    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    dataset.ConversionType = "WSD"
    pixels = dataset.pixel_array
    dataset.PixelData = render_text(pixels, [(4, 4, "DOSE REPORT"), (4, 24, "DLP 820 mGy")],
                                    size=12, value=int(pixels.max())).tobytes()


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


# ---- encapsulated documents
# A PDF and an HL7 CDA document, and DICOM Encapsulated PDF / CDA data sets that carry them.
# Deterministic like the rest of this module: the same call returns the same bytes.

ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"
ENCAPSULATED_CDA_STORAGE = "1.2.840.10008.5.1.4.1.1.104.2"
HL7_EXAMPLE_ROOT = "2.16.840.1.113883.19.5"  # HL7's example organisation OID
CDA_NAMESPACE = "urn:hl7-org:v3"


def _pdf_string(text: str) -> bytes:
    """``text`` as a PDF literal string in WinAnsi (Latin-1) with its delimiters escaped."""
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return b"(" + escaped.encode("latin-1", errors="replace") + b")"


def make_pdf(lines: list[str], *, compress: bool = True, author: str = "",
             image_only: bool = False) -> bytes:
    """A one-page PDF that draws each line in Helvetica with text operators (BT Tf Td Tj ET).

    ``compress`` FlateDecode-compresses the content stream, so the bytes hold none of the text.
    ``author`` goes into the document information. ``image_only`` draws a 4 x 4 grey image
    instead of any text (a scanned form, as far as a text scan can tell).
    """
    from pypdf import PdfWriter
    from pypdf.generic import (
        ArrayObject,
        DecodedStreamObject,
        DictionaryObject,
        NameObject,
        NumberObject,
    )

    writer = PdfWriter()
    page = writer.add_blank_page(width=612, height=792)
    if image_only:
        image = DecodedStreamObject()
        image.update({NameObject("/Type"): NameObject("/XObject"),
                      NameObject("/Subtype"): NameObject("/Image"),
                      NameObject("/Width"): NumberObject(4),
                      NameObject("/Height"): NumberObject(4),
                      NameObject("/ColorSpace"): NameObject("/DeviceGray"),
                      NameObject("/BitsPerComponent"): NumberObject(8)})
        image.set_data(bytes([0x40, 0x80, 0xC0, 0xA0] * 4))
        resources = {NameObject("/XObject"): DictionaryObject(
            {NameObject("/Im1"): writer._add_object(image)})}
        operators = b"q 468 0 0 648 72 72 cm /Im1 Do Q"
    else:
        font = DictionaryObject({NameObject("/Type"): NameObject("/Font"),
                                 NameObject("/Subtype"): NameObject("/Type1"),
                                 NameObject("/BaseFont"): NameObject("/Helvetica"),
                                 NameObject("/Encoding"): NameObject("/WinAnsiEncoding")})
        resources = {NameObject("/Font"): DictionaryObject(
            {NameObject("/F1"): writer._add_object(font)})}
        operators = b"\n".join(b"BT /F1 12 Tf 72 %d Td %s Tj ET" % (720 - 18 * number,
                                                                    _pdf_string(line))
                               for number, line in enumerate(lines))
    resources[NameObject("/ProcSet")] = ArrayObject(
        [NameObject("/PDF"), NameObject("/ImageB" if image_only else "/Text")])
    page[NameObject("/Resources")] = DictionaryObject(resources)
    content = DecodedStreamObject()
    content.set_data(operators)
    page[NameObject("/Contents")] = writer._add_object(content)
    if compress:
        page.compress_content_streams()
    if author:
        writer.add_metadata({"/Author": author})
    output = BytesIO()
    writer.write(output)
    return output.getvalue()


def make_cda(given: str, family: str, patient_id: str, birth_date: str, note: str = "") -> bytes:
    """A minimal HL7 CDA R2 document (UTF-8 XML) about one patient.

    The patient's ID is ``recordTarget/patientRole/id/@extension``, the name
    ``patient/name/given`` (one element per word) and ``family``, the birth date
    ``birthTime/@value``, the note the text of the one section. Empty values are written as
    null flavours, so a document made with no identifiers holds none.
    """
    document_id = _uid("cda", given, family, patient_id, birth_date, note)
    if patient_id:
        patient_id_element = f'<id root="{HL7_EXAMPLE_ROOT}" extension={quoteattr(patient_id)}/>'
    else:
        patient_id_element = '<id nullFlavor="MSK"/>'
    name_parts = [f"<given>{escape(part)}</given>" for part in given.split()]
    if family:
        name_parts.append(f"<family>{escape(family)}</family>")
    name = (f"<name>{''.join(name_parts)}</name>" if name_parts else '<name nullFlavor="MSK"/>')
    birth_time = (f"<birthTime value={quoteattr(birth_date)}/>" if birth_date
                  else '<birthTime nullFlavor="MSK"/>')
    text = f"<paragraph>{escape(note)}</paragraph>" if note else "<paragraph/>"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="{CDA_NAMESPACE}">
  <realmCode code="US"/>
  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
  <id root="{document_id}"/>
  <code code="11488-4" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC"
        displayName="Consult note"/>
  <title>Consult note</title>
  <effectiveTime value="20040119"/>
  <confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>
  <languageCode code="en-US"/>
  <recordTarget>
    <patientRole>
      {patient_id_element}
      <patient>
        {name}
        <administrativeGenderCode nullFlavor="UNK"/>
        {birth_time}
      </patient>
    </patientRole>
  </recordTarget>
  <author>
    <time value="20040119"/>
    <assignedAuthor>
      <id root="{HL7_EXAMPLE_ROOT}" extension="DEMO-AUTHOR"/>
    </assignedAuthor>
  </author>
  <custodian>
    <assignedCustodian>
      <representedCustodianOrganization>
        <id root="{HL7_EXAMPLE_ROOT}"/>
      </representedCustodianOrganization>
    </assignedCustodian>
  </custodian>
  <component>
    <structuredBody>
      <component>
        <section>
          <code code="29299-5" codeSystem="2.16.840.1.113883.6.1" displayName="Reason for visit"/>
          <title>Note</title>
          <text>{text}</text>
        </section>
      </component>
    </structuredBody>
  </component>
</ClinicalDocument>
""".encode()


def _cda_instance_identifier(document: bytes, fallback: str) -> str:
    """HL7InstanceIdentifier for a CDA: its ClinicalDocument/id as ``root^extension``."""
    from xml.etree import ElementTree

    try:
        element = ElementTree.fromstring(document).find(f"{{{CDA_NAMESPACE}}}id")
    except ElementTree.ParseError:
        element = None
    if element is None or not element.get("root"):
        return fallback
    root = element.get("root", "")
    return f"{root}^{element.get('extension')}" if element.get("extension") else root


def encapsulated_document_dataset(document: bytes, mime_type: str, *, patient: dict[str, str],
                                  uid_seed: str) -> Dataset:
    """A DICOM Encapsulated PDF data set (Encapsulated CDA when ``mime_type`` is text/xml)
    holding ``document``, with file meta, ready for ``save_as(..., enforce_file_format=True)``.

    ``patient`` maps keywords to values (``FAKE_IDENTIFIERS``, say); the UIDs follow from
    ``uid_seed``.
    """
    is_cda = mime_type == "text/xml"
    sop_class = ENCAPSULATED_CDA_STORAGE if is_cda else ENCAPSULATED_PDF_STORAGE
    dataset = Dataset()
    dataset.SpecificCharacterSet = "ISO_IR 192"
    dataset.SOPClassUID = sop_class
    dataset.SOPInstanceUID = _uid(uid_seed, "document", "instance")
    dataset.StudyDate = "20040119"
    dataset.StudyTime = "072730"
    dataset.ContentDate = "20040119"
    dataset.ContentTime = "072731"
    dataset.AcquisitionDateTime = "20040119072731"
    dataset.AccessionNumber = ""
    dataset.Modality = "DOC"
    dataset.ConversionType = "WSD"
    dataset.Manufacturer = "deidpipe synthetic"
    dataset.ReferringPhysicianName = ""
    dataset.SeriesDescription = "Consult note (CDA)" if is_cda else "Scanned document (PDF)"
    dataset.PatientName = ""
    dataset.PatientID = ""
    dataset.PatientBirthDate = ""
    dataset.PatientSex = ""
    dataset.StudyInstanceUID = _uid(uid_seed, "document", "study")
    dataset.SeriesInstanceUID = _uid(uid_seed, "document", "series")
    dataset.StudyID = "1"
    dataset.SeriesNumber = 1
    dataset.InstanceNumber = 1
    dataset.BurnedInAnnotation = "NO"
    dataset.DocumentTitle = "Consult note" if is_cda else "Scanned document"
    dataset.ConceptNameCodeSequence = Sequence()
    if is_cda:
        dataset.HL7InstanceIdentifier = _cda_instance_identifier(
            document, _uid(uid_seed, "document", "hl7"))
    dataset.MIMETypeOfEncapsulatedDocument = mime_type
    dataset.add_new(0x00420011, "OB", document)  # EncapsulatedDocument
    dataset.add_new(0x00420015, "UL", len(document))  # EncapsulatedDocumentLength (no pad)
    for keyword, value in patient.items():
        setattr(dataset, keyword, value)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta = meta
    return dataset
