"""The identifier matcher: forms people write, and what must not match."""

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from deidpipe.identifiers import IdentifierSet, Matcher, name_forms


def matcher_for(**values: str) -> Matcher:
    dataset = Dataset()
    for keyword, value in values.items():
        setattr(dataset, keyword, value)
    identifiers = IdentifierSet()
    identifiers.add_dataset(dataset)
    return identifiers.matcher()


def found(matcher: Matcher, text: str) -> set[tuple[str, str]]:
    return {(needle.attribute, needle.kind) for needle in matcher.find(text)}


@pytest.mark.parametrize("text", ["Alice Testperson", "TESTPERSON, ALICE", "testperson^alice^q",
                                  "alice q testperson", "Dr. Alice Testperson"])
def test_full_name_in_any_order_and_case_is_an_identifier(text):
    matcher = matcher_for(PatientName="Testperson^Alice^Q")
    assert found(matcher, text) == {("PatientName", "identifier")}


def test_one_name_part_alone_is_weaker_and_whole_words_only():
    matcher = matcher_for(PatientName="Testperson^Alice^Q")
    assert found(matcher, "ask alice") == {("PatientName", "name_part")}
    assert found(matcher, "malice aforethought") == set()
    assert found(matcher, "q") == set()  # too short to mean anything


@pytest.mark.parametrize("text", ["19580923", "1958-09-23", "09/23/1958", "23.09.1958",
                                  "9/23/1958", "DOB: 1958 09 23"])
def test_birth_date_in_common_formats(text):
    assert found(matcher_for(PatientBirthDate="19580923"), text) == {
        ("PatientBirthDate", "identifier")}


@pytest.mark.parametrize("text, expected", [
    ("mrn404177", True), ("MRN 404-177", True), ("xmrn404177", False), ("mrn4041777", False)])
def test_identifiers_with_or_without_separators(text, expected):
    assert bool(found(matcher_for(PatientID="MRN-404-177"), text)) is expected


def test_short_numbers_match_only_as_written():
    matcher = matcher_for(PatientID="1001")
    assert found(matcher, "subject 1001") == {("PatientID", "identifier")}
    assert found(matcher, "1.0.0.1") == set()  # a run of numbers that joins into it
    assert matcher.find_in_texts(["1001"], numeric={0}) == {}
    assert matcher.find_in_bytes(b"\x00 1.2.840.1001.5 \x00") == []
    assert [offset for _needle, offset in matcher.find_in_bytes(b"\x00\x00 1001\x00")] == [3]


def test_names_at_any_depth_and_staff_names_are_collected():
    dataset = Dataset()
    item = Dataset()
    item.PatientID = "ALT55501999"
    dataset.OtherPatientIDsSequence = Sequence([item])
    dataset.OperatorsName = "Invented^Technologist"
    identifiers = IdentifierSet()
    identifiers.add_dataset(dataset)
    matcher = identifiers.matcher()
    assert found(matcher, "alt-555-01999") == {("OtherPatientIDsSequence > PatientID",
                                                "identifier")}
    assert found(matcher, "technologist invented") == {("OperatorsName", "staff_name")}
    assert found(matcher, "invented") == set()  # staff name parts are not searched alone
    assert identifiers.values == {("OtherPatientIDsSequence > PatientID", "alt55501999"),
                                  ("OperatorsName", "inventedtechnologist")}


def test_raw_bytes_find_names_in_other_spellings():
    matcher = matcher_for(PatientName="Testperson^Alice")
    hits = matcher.find_in_bytes(b"\x01\x02ALICE TESTPERSON\x00")
    assert [(needle.attribute, offset) for needle, offset in hits] == [("PatientName", 2)]


def test_name_forms_leave_out_prefix_and_suffix():
    full, parts = name_forms("Testperson^Alice^Q^Dr^Jr")
    assert ("alice", "testperson") in full and ("alice", "q", "testperson") in full
    assert parts == ["testperson", "alice"]
