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
    ("mrn404177", True), ("MRN 404-177", True), ("xmrn404177", True), ("mrn4041777", False),
    ("1mrn404177", True), ("mrn404177 1", True)])
def test_identifiers_with_or_without_separators(text, expected):
    assert bool(found(matcher_for(PatientID="MRN-404-177"), text)) is expected


@pytest.mark.parametrize("text", [
    "MRN40417723", "PATMRN40417723", "MRN40417723x", "id=MRN40417723;", "noteMRN40417723end",
    "ptid40417723", "Acc#88310452"])
def test_ids_glued_to_other_text_are_found(text):
    matcher = matcher_for(PatientID="MRN40417723", OtherPatientIDs="40417723",
                          AccessionNumber="88310452")
    assert {kind for _attribute, kind in found(matcher, text)} == {"identifier"}


@pytest.mark.parametrize("text", [
    "MRN404177231", "1.2.840.1404177238.5", "9940417723", "404177230", "x40417723999"])
def test_glued_ids_are_not_found_inside_longer_digit_runs(text):
    matcher = matcher_for(OtherPatientIDs="40417723", PatientID="MRN40417723")
    assert found(matcher, text) == set()


def test_short_ids_are_never_glued():
    matcher = matcher_for(PatientID="4041")  # under six characters: whole tokens only
    assert found(matcher, "id 4041") == {("PatientID", "identifier")}
    assert found(matcher, "AB4041") == set()


def test_glued_ids_in_raw_bytes_follow_the_same_rules():
    matcher = matcher_for(PatientID="MRN40417723")
    assert [offset for _needle, offset in matcher.find_in_bytes(b"\x00NOTEMRN40417723\x00")] \
        == [5]
    assert matcher.find_in_bytes(b"\x00MRN404177239\x00") == []


@pytest.mark.parametrize("text", [
    "23-Sep-1958", "23 Sep 1958", "September 23, 1958", "Sep 23 1958", "23-SEP-58",
    "23SEP1958", "Sept. 23, 1958", "23rd September 1958", "sep 23rd, 58", "1958-Sep-23",
    "DOB:23sep58"])
def test_birth_dates_with_month_names(text):
    assert found(matcher_for(PatientBirthDate="19580923"), text) == {
        ("PatientBirthDate", "identifier")}


@pytest.mark.parametrize("text", ["3 Feb 2001", "February 3rd, 2001", "03-FEB-01", "Feb 3 01"])
def test_single_digit_days_with_month_names(text):
    assert found(matcher_for(PatientBirthDate="20010203"), text) == {
        ("PatientBirthDate", "identifier")}


@pytest.mark.parametrize("text", [
    "23 Oct 1958", "24 Sep 1958", "Sep 23 1959", "09/23/58", "23 Sep 19580"])
def test_other_dates_and_numeric_two_digit_years_are_not_the_birth_date(text):
    assert found(matcher_for(PatientBirthDate="19580923"), text) == set()


INITIALS_FORMS = ["A. Testperson", "Testperson, A.", "A Testperson", "A.Q. Testperson",
                  "A Q Testperson", "Alice Q. Testperson", "TESTPERSON A", "testperson, A. Q.",
                  "seen by A.TESTPERSON"]


@pytest.mark.parametrize("text", INITIALS_FORMS)
def test_initials_with_the_family_name_are_a_full_name(text):
    matcher = matcher_for(PatientName="Testperson^Alice^Q")
    assert found(matcher, text) == {("PatientName", "identifier")}


@pytest.mark.parametrize("text", ["a brain scan", "brain a", "head b", "B. Headley"])
def test_lower_case_letters_are_not_initials(text):
    matcher = matcher_for(PatientName="Brain^Alice")
    assert {kind for _attribute, kind in found(matcher, text)} <= {"name_part"}


@pytest.mark.parametrize("text", INITIALS_FORMS)
def test_initials_with_the_family_name_are_found_in_raw_bytes_too(text):
    """Bytes no element holds (the preamble, data after the pixel data): the same forms as in
    element text, at the offset where the name starts."""
    matcher = matcher_for(PatientName="Testperson^Alice^Q")
    data = b"\x00\x01" + text.encode() + b"\x00"
    hits = {(needle.attribute, needle.kind) for needle, _offset in matcher.find_in_bytes(data)}
    assert hits == {("PatientName", "identifier")}
    offsets = {offset for _needle, offset in matcher.find_in_bytes(data)}
    assert min(offsets) == 2 + (len("seen by ") if text.startswith("seen by ") else 0)


@pytest.mark.parametrize("text,attribute", [
    ("DOB: 23 Sep, 1958", "PatientBirthDate"), ("September 23, 1958", "PatientBirthDate"),
    ("42 Imaginary Lane, Nowhereville", "PatientAddress"),
    ("42 imaginary lane. nowhereville", "PatientAddress"),
    ("tel (555) 0147-3321", "PatientTelephoneNumbers"), ("Alice Q. Testperson", "PatientName"),
    ("TESTPERSON , Alice - Q", "PatientName")])
def test_mixed_separators_are_found_in_raw_bytes(text, attribute):
    """People mix separators in one value; the raw scan finds them as element text does."""
    matcher = matcher_for(PatientName="Testperson^Alice^Q", PatientBirthDate="19580923",
                          PatientAddress="42 Imaginary Lane, Nowhereville",
                          PatientTelephoneNumbers="555-0147-3321")
    data = b"\x00" + text.encode() + b"\x00"
    assert {needle.attribute for needle, _offset in matcher.find_in_bytes(data)} == {attribute}
    assert {needle.attribute for needle in matcher.find(text)} >= {attribute}


def test_neighbouring_elements_holding_a_part_each_are_not_one_value_in_raw_bytes():
    """Implicit VR: 'Testperson' ends one element's value, the next element's header is all
    binary, and 'Alice' starts its value; people do not type such bytes between words."""
    matcher = matcher_for(PatientName="Testperson^Alice^Q")
    header = bytes.fromhex("1000 2000 0600 0000")  # (0010,0020), length 6
    assert matcher.find_in_bytes(b"Testperson" + header + b"Alice ") == []
    assert matcher.find_in_bytes(b"Testperson, Alice ") != []  # control: typed separators


@pytest.mark.parametrize("text", ["Nowhereville", "lane 42", "Imaginary", "19 58 09 23 x",
                                  "1958 in Nowhereville", "testperson alone", "5550 147 3321"])
def test_parts_of_values_in_raw_bytes_are_not_identifiers(text):
    """Controls: one token of a multi-token value, or its tokens split otherwise."""
    matcher = matcher_for(PatientName="Testperson^Alice^Q", PatientBirthDate="19580923",
                          PatientAddress="42 Imaginary Lane, Nowhereville",
                          PatientTelephoneNumbers="555-0147-3321")
    assert matcher.find_in_bytes(b"\x00" + text.encode() + b"\x00") == []


@pytest.mark.parametrize("text", ["a brain scan", "brain a", "head b", "B. Headley",
                                  "xbrain, A.", "Brain, Ax"])
def test_lower_case_letters_are_not_initials_in_raw_bytes(text):
    matcher = matcher_for(PatientName="Brain^Alice")
    assert matcher.find_in_bytes(b"\x00" + text.encode() + b"\x00") == []


def test_staff_names_with_initials_are_staff_names():
    matcher = matcher_for(OperatorsName="Invented^Technologist")
    assert found(matcher, "T. Invented") == {("OperatorsName", "staff_name")}


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


def ocr_found(matcher: Matcher, text: str) -> set[tuple[str, str]]:
    return {(needle.attribute, needle.kind) for needle in matcher.find_in_ocr_text(text)}


@pytest.mark.parametrize("text, attribute", [
    ("TESTPERSON^ALICE", "PatientName"), ("TE5TPERS0N ALICE", "PatientName"),
    ("ALICETESTPERSON", "PatientName"), ("Name:TESTPERS0N,ALICE", "PatientName"),
    ("A. TESTPERSON", "PatientName"), ("MRN4O417723", "PatientID"), ("MRN404I7723", "PatientID"),
    ("ID:MRN40417723", "PatientID"), ("DOB 23-5EP-1958", "PatientBirthDate"),
    ("09/23/1958", "PatientBirthDate"), ("I9580923", "PatientBirthDate")])
def test_ocr_text_is_matched_through_ocr_confusions(text, attribute):
    matcher = matcher_for(PatientName="Testperson^Alice^Q", PatientID="MRN40417723",
                          PatientBirthDate="19580923")
    assert (attribute, "identifier") in ocr_found(matcher, text)


def test_ocr_text_run_together_still_holds_each_identifier():
    matcher = matcher_for(PatientID="MRN40417723", PatientBirthDate="19580923")
    assert ocr_found(matcher, "MRN4041772323-SEP-1958") == {
        ("PatientID", "identifier"), ("PatientBirthDate", "identifier")}


@pytest.mark.parametrize("text", ["R", "L", "T1 AX 5mm", "SE 4 IM 12", "W 400 L 40", "10 cm",
                                  "2019580923", "x4041y", "ALICE"])
def test_ocr_controls_match_no_identifier(text):
    matcher = matcher_for(PatientName="Testperson^Alice^Q", PatientBirthDate="19580923",
                          OtherPatientIDs="4041")
    assert {kind for _attribute, kind in ocr_found(matcher, text)} <= {"name_part"}
