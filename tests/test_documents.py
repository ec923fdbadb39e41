"""Text of encapsulated documents (PDF, CDA, plain text) for the identifier scan, and the
synthetic documents' round trip through staging. Synthetic, made-up identifiers only."""

import logging
import random
import re
import warnings
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pypdf import PdfReader, PdfWriter

from deidpipe import documents
from deidpipe.documents import MAX_TEXT_CHARS, DocumentText, document_text
from deidpipe.stage import stage_session
from deidpipe.synthetic import (
    ENCAPSULATED_CDA_STORAGE,
    ENCAPSULATED_PDF_STORAGE,
    FAKE_IDENTIFIERS,
    encapsulated_document_dataset,
    make_cda,
    make_pdf,
)

FAMILY, GIVEN = FAKE_IDENTIFIERS["PatientName"].split("^")[:2]  # Testperson, Alice
PATIENT_ID = FAKE_IDENTIFIERS["PatientID"]  # MRN40417723
BIRTH_DATE = FAKE_IDENTIFIERS["PatientBirthDate"]
PDF = "application/pdf"


def read(document: bytes, mime_type: str = PDF) -> DocumentText:
    dataset = encapsulated_document_dataset(document, mime_type, patient=FAKE_IDENTIFIERS,
                                            uid_seed="test-documents")
    result = document_text(dataset)
    assert result is not None
    return result


def all_text(result: DocumentText) -> str:
    return "\n".join(text for _, text in result.texts)


def texts_at(result: DocumentText, prefix: str) -> str:
    return "\n".join(text for where, text in result.texts if where.startswith(prefix))


def encrypted(document: bytes, user_password: str, owner_password: str | None = None) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(BytesIO(document)))
    writer.encrypt(user_password, owner_password=owner_password, algorithm="RC4-128")
    output = BytesIO()
    writer.write(output)
    return output.getvalue()


# ---- PDF ----


def test_compressed_pdf_text_is_extracted_though_the_bytes_do_not_hold_it():
    document = make_pdf([f"Patient: {GIVEN} {FAMILY}", f"MRN: {PATIENT_ID}"])
    assert FAMILY.encode() not in document and PATIENT_ID.encode() not in document
    assert b"/FlateDecode" in document
    result = read(document)
    assert (result.mime_type, result.kind, result.problem) == (PDF, "PDF", "")
    assert (result.pages, result.pages_without_text) == (1, 0)
    page = texts_at(result, "page 1 text")
    assert f"{GIVEN} {FAMILY}" in page and PATIENT_ID in page


def test_uncompressed_pdf_text_is_extracted():
    document = make_pdf([f"Seen: {FAMILY}, {GIVEN} (DOB {BIRTH_DATE})"], compress=False)
    assert FAMILY.encode() in document and b"/FlateDecode" not in document
    result = read(document)
    assert result.problem == ""
    assert f"{FAMILY}, {GIVEN} (DOB {BIRTH_DATE})" in texts_at(result, "page 1 text")


def test_identifier_only_in_the_author_is_found_under_document_information():
    result = read(make_pdf(["Consult note"], author=PATIENT_ID))
    assert result.problem == ""
    assert ("document information (Author)", PATIENT_ID) in result.texts
    assert PATIENT_ID not in texts_at(result, "page")


def test_image_only_pdf_has_no_words_and_no_problem():
    document = make_pdf([], image_only=True)
    assert b"/Image" in document
    result = read(document)
    assert result.problem == ""
    assert (result.pages, result.pages_without_text) == (1, 1)
    assert not re.search(r"\w", texts_at(result, "page"))


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "header only", "empty stream"])
def test_damaged_pdf_is_a_problem_not_an_exception(damage):
    good = make_pdf([f"{GIVEN} {FAMILY}"])
    document = {"truncated": good[:len(good) // 2],
                "random bytes": random.Random(7).randbytes(4000),
                "header only": b"%PDF-1.7\n",
                "empty stream": good.replace(b"stream\n", b"stream\n\x00\xff", 1)}[damage]
    result = read(document)
    assert "damaged" in result.problem, result
    assert result.kind == "PDF"
    assert "Traceback" not in result.problem and FAMILY not in result.problem


def test_pdf_cut_after_its_last_object_is_read_and_said_to_be_cut_short():
    document = make_pdf([f"{GIVEN} {FAMILY}"])
    result = read(document[:document.rindex(b"%%EOF") + 3])  # "...%%E"
    assert FAMILY in all_text(result)
    assert "cut short" in result.problem


def test_pdf_encrypted_with_a_user_password_is_a_problem():
    result = read(encrypted(make_pdf([f"{GIVEN} {FAMILY}"]), "secret"))
    assert "encrypted" in result.problem
    assert FAMILY not in all_text(result)


def test_pdf_with_only_an_owner_password_is_read():
    result = read(encrypted(make_pdf([f"{GIVEN} {FAMILY}"]), "", owner_password="owner"))
    assert result.problem == ""
    assert f"{GIVEN} {FAMILY}" in texts_at(result, "page 1 text")


def test_pdf_form_fields_and_annotations_are_read():
    from pypdf.annotations import FreeText
    from pypdf.generic import (
        ArrayObject,
        DictionaryObject,
        NameObject,
        NumberObject,
        TextStringObject,
    )

    writer = PdfWriter(clone_from=PdfReader(BytesIO(make_pdf(["Intake form"]))))
    writer.add_annotation(0, FreeText(text=f"call {FAMILY}", rect=(50, 550, 200, 650)))
    field = DictionaryObject({
        NameObject("/FT"): NameObject("/Tx"), NameObject("/T"): TextStringObject("mrn"),
        NameObject("/V"): TextStringObject(PATIENT_ID), NameObject("/Type"): NameObject("/Annot"),
        NameObject("/Subtype"): NameObject("/Widget"),
        NameObject("/Rect"): ArrayObject([NumberObject(n) for n in (50, 700, 200, 720)])})
    writer.root_object[NameObject("/AcroForm")] = DictionaryObject(
        {NameObject("/Fields"): ArrayObject([writer._add_object(field)])})
    output = BytesIO()
    writer.write(output)
    result = read(output.getvalue())
    assert result.problem == ""
    assert PATIENT_ID in texts_at(result, "form field values")
    assert f"call {FAMILY}" in texts_at(result, "page 1 annotations")


def test_text_beyond_the_cap_is_cut_and_said(monkeypatch):
    monkeypatch.setattr(documents, "MAX_TEXT_CHARS", 1000)
    for document, mime_type in ((make_pdf(["A" * 1500]), PDF),
                                (make_cda("A" * 1500, FAMILY, "", ""), "text/xml"),
                                (b"A" * 1500, "text/plain")):
        result = read(document, mime_type)
        assert sum(len(text) for _, text in result.texts) <= 1000
        assert "only the first 1,000 characters" in result.problem


def test_default_text_cap_holds_a_decompression_bomb():
    document = make_pdf(["A" * (MAX_TEXT_CHARS + 1000)])  # 5 MB of text in 6 kB
    assert len(document) < 10_000
    result = read(document)
    assert sum(len(text) for _, text in result.texts) <= MAX_TEXT_CHARS
    assert "only the first" in result.problem


def test_pages_beyond_the_cap_are_not_read_and_said(monkeypatch):
    monkeypatch.setattr(documents, "MAX_PAGES", 1)
    writer = PdfWriter()
    for line in ("first page", f"second page {FAMILY}"):
        writer.add_page(PdfReader(BytesIO(make_pdf([line]))).pages[0])
    output = BytesIO()
    writer.write(output)
    result = read(output.getvalue())
    assert result.pages == 2 and "first page" in all_text(result)
    assert FAMILY not in all_text(result)
    assert "only the first 1 of 2 pages were read" in result.problem


def test_pypdf_prints_and_logs_nothing_for_a_damaged_pdf(capsys, caplog):
    damaged = make_pdf([f"{GIVEN} {FAMILY}"])[:300]
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings():  # without the guard, pypdf does speak up
        warnings.simplefilter("ignore")
        with pytest.raises(Exception):  # noqa: B017 (whatever pypdf raises)
            PdfReader(BytesIO(damaged))
    assert any(record.name.startswith("pypdf") for record in caplog.records)
    capsys.readouterr()
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for document in (damaged, damaged + b"%%EOF", random.Random(3).randbytes(2000)):
            assert read(document).problem
    assert capsys.readouterr() == ("", "")
    assert caplog.records == []
    assert caught == []
    logger = logging.getLogger("pypdf")  # restored afterwards
    assert (logger.level, logger.propagate, logger.handlers) == (logging.NOTSET, True, [])


# ---- CDA and other XML ----


def test_cda_name_is_joined_given_before_family_and_the_id_comes_from_the_extension():
    document = make_cda(GIVEN, FAMILY, PATIENT_ID, BIRTH_DATE, note="Follow-up in six weeks.")
    result = read(document, "text/xml")
    assert (result.mime_type, result.kind, result.problem) == ("text/xml", "CDA", "")
    assert f"{GIVEN} {FAMILY}" in texts_at(result, "XML text")
    assert "Follow-up in six weeks." in texts_at(result, "XML text")
    attributes = texts_at(result, "XML attribute values").split("\n")
    assert PATIENT_ID in attributes and BIRTH_DATE in attributes


def test_cda_without_identifiers_is_clean():
    document = make_cda("", "", "", "")
    result = read(document, "text/xml")
    assert result.problem == ""
    for needle in (GIVEN, FAMILY, PATIENT_ID, BIRTH_DATE):
        assert needle.encode() not in document
        assert needle not in all_text(result)


@pytest.mark.parametrize("document", [
    b'<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY who "Alice Testperson">]>\n<a>&who;</a>',
    b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "ha"><!ENTITY y "&x;&x;&x;&x;">]><a>&y;</a>',
    b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]><a>&e;</a>',
], ids=["internal entity", "nested entities", "external entity"])
def test_xml_with_an_entity_declaration_is_a_problem(document):
    result = read(document, "text/xml")
    assert "entit" in result.problem
    assert result.texts == []


def test_malformed_xml_keeps_the_text_before_the_error():
    result = read(b"<ClinicalDocument><given>Alice</given><family>Testperson</fam", "text/xml")
    assert "not well formed" in result.problem
    assert "Alice" in all_text(result)


# ---- plain text, other types, no document ----


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_plain_text_is_decoded(encoding):
    result = read(f"Patient Zoë {FAMILY}, {PATIENT_ID}\n".encode(encoding), "text/plain")
    assert (result.kind, result.problem) == ("text", "")
    assert result.texts == [("text", f"Patient Zoë {FAMILY}, {PATIENT_ID}")]


def test_data_set_without_a_document_gives_none():
    dataset = Dataset()
    dataset.PatientName = FAKE_IDENTIFIERS["PatientName"]
    assert document_text(dataset) is None


def test_unknown_mime_type_gives_no_texts():
    result = read(b"solid part\nendsolid part\n", "model/stl")
    assert (result.mime_type, result.kind, result.texts, result.problem) == \
        ("model/stl", "model/stl", [], "")


def test_document_in_any_data_set_without_a_mime_type_is_sniffed():
    dataset = Dataset()
    dataset.add_new(0x00420011, "OB", make_pdf([f"{GIVEN} {FAMILY}"]))
    result = document_text(dataset)
    assert result is not None and (result.mime_type, result.kind) == (PDF, "PDF")
    assert FAMILY in all_text(result)
    dataset.EncapsulatedDocument = make_cda(GIVEN, FAMILY, PATIENT_ID, BIRTH_DATE)
    result = document_text(dataset)
    assert result is not None and (result.mime_type, result.kind) == ("text/xml", "CDA")


@pytest.mark.parametrize("mime_type", [PDF, "text/xml"])
def test_odd_length_document_padding_is_no_problem(tmp_path, mime_type):
    document = make_pdf([FAMILY]) if mime_type == PDF else make_cda(GIVEN, FAMILY, "", "")
    document += b" " * (1 - len(document) % 2)  # odd length: the file pads it with a NUL
    dataset = encapsulated_document_dataset(document, mime_type, patient={}, uid_seed="odd")
    del dataset.EncapsulatedDocumentLength  # nothing says where the document ends
    dataset.save_as(tmp_path / "odd.dcm", enforce_file_format=True)
    reread = dcmread(tmp_path / "odd.dcm")
    assert reread.EncapsulatedDocument == document + b"\0"
    result = document_text(reread)
    assert result is not None and result.problem == ""
    assert FAMILY in all_text(result)


# ---- synthetic builders and the staging round trip ----


def test_builders_are_deterministic():
    assert make_pdf(["a"], author="b") == make_pdf(["a"], author="b")
    assert make_cda(GIVEN, FAMILY, PATIENT_ID, BIRTH_DATE) == \
        make_cda(GIVEN, FAMILY, PATIENT_ID, BIRTH_DATE)
    first, second = (encapsulated_document_dataset(b"%PDF-", PDF, patient={}, uid_seed="s")
                     for _ in range(2))
    assert first.SOPInstanceUID == second.SOPInstanceUID


@pytest.mark.parametrize("mime_type", [PDF, "text/xml"])
def test_encapsulated_document_survives_staging(tmp_path, profile_v1, mime_type):
    if mime_type == PDF:
        document = make_pdf([f"{GIVEN} {FAMILY}", PATIENT_ID], author="Madeup Cornelius")
    else:
        document = make_cda(GIVEN, FAMILY, PATIENT_ID, BIRTH_DATE, note="seen today")
    source = tmp_path / "source"
    source.mkdir()
    dataset = encapsulated_document_dataset(document, mime_type, patient=FAKE_IDENTIFIERS,
                                            uid_seed=f"staging-{mime_type}")
    sop_class = ENCAPSULATED_PDF_STORAGE if mime_type == PDF else ENCAPSULATED_CDA_STORAGE
    assert dataset.SOPClassUID == dataset.file_meta.MediaStorageSOPClassUID == sop_class
    dataset.save_as(source / "DOC0001.dcm", enforce_file_format=True)
    staged_dir = tmp_path / "staged" / "sub-01" / "ses-01"
    manifest = stage_session(source, profile_v1, staged_dir,
                             tmp_path / "staged" / "sub-01" / "ses-01.manifest.json")
    assert manifest["errors"] == [] and manifest["counts"]["staged"] == 1
    [entry] = manifest["files"]
    assert entry["source"] == "DOC0001.dcm" and "note" not in entry
    assert entry["staged"].endswith(f"{dataset.SOPInstanceUID}.DOC.dcm")
    staged = dcmread(staged_dir / entry["staged"])
    original = dcmread(source / "DOC0001.dcm")
    assert staged.EncapsulatedDocument == original.EncapsulatedDocument
    assert staged.EncapsulatedDocument[:len(document)] == document
    assert staged.EncapsulatedDocumentLength == len(document)
    assert staged.MIMETypeOfEncapsulatedDocument == mime_type
    assert staged.SOPClassUID == sop_class
    assert str(staged.PatientName) == "" and staged.PatientID == ""  # the profile acted
    # The engine leaves the document alone: its identifiers are still there to be found.
    result = document_text(staged)
    assert result is not None and result.problem == ""
    assert f"{GIVEN} {FAMILY}" in all_text(result) and PATIENT_ID in all_text(result)


def test_staged_pdf_bytes_hide_the_name_from_a_raw_scan(tmp_path, profile_v1):
    source = tmp_path / "source"
    source.mkdir()
    encapsulated_document_dataset(make_pdf([f"{GIVEN} {FAMILY}"]), PDF, patient={},
                                  uid_seed="raw").save_as(source / "d.dcm",
                                                          enforce_file_format=True)
    staged_dir = tmp_path / "ses-01"
    manifest = stage_session(source, profile_v1, staged_dir, tmp_path / "ses-01.manifest.json")
    staged_bytes = Path(staged_dir / manifest["files"][0]["staged"]).read_bytes()
    assert FAMILY.encode() not in staged_bytes
    assert FAMILY in all_text(document_text(dcmread(staged_dir / manifest["files"][0]["staged"])))
