"""Grouping a session's findings (``deidpipe.findings.group_findings``): one group per kind of
problem, every file kept, fail groups first."""

import json

from deidpipe.findings import group_findings

LEAK_MESSAGE = "holds the source's PatientName (value not shown)"


def leak(file: str, tag: str = "ImageComments (0020,4000)", message: str = LEAK_MESSAGE,
         severity: str = "fail", source_attribute: str = "PatientName",
         source_file: str = "") -> dict[str, str]:
    """A finding as ``Finding.as_dict`` writes it (empty optional keys left out)."""
    finding = {"check": "identifier_leak", "severity": severity, "file": file, "tag": tag,
               "message": message}
    if source_attribute:
        finding["source_attribute"] = source_attribute
    if source_file:
        finding["source_file"] = source_file
    return finding


def files(count: int) -> list[str]:
    return [f"1-T1/1.2.3.{number}.MR.dcm" for number in range(1, count + 1)]


def test_empty_input_gives_no_groups():
    assert group_findings([]) == []
    assert group_findings(iter(())) == []


def test_one_name_in_312_files_is_one_group_listing_every_file():
    names = files(312)
    findings = [leak(name, source_file=f"dicom/{number}.dcm")
                for number, name in enumerate(names)]
    groups = group_findings(findings)
    assert len(groups) == 1
    group = groups[0]
    assert {key: group[key] for key in ("check", "severity", "tag", "source_attribute",
                                        "message", "files", "examples")} == {
        "check": "identifier_leak", "severity": "fail", "tag": "ImageComments (0020,4000)",
        "source_attribute": "PatientName", "message": LEAK_MESSAGE, "files": 312,
        "examples": names[:3]}
    assert group["file_list"] == [{"file": name, "source_file": f"dicom/{number}.dcm"}
                                  for number, name in enumerate(names)]
    # The exact shape, so the report JSON holds nothing more or less.
    assert set(group) == {"check", "severity", "tag", "source_attribute", "message", "files",
                          "examples", "file_list"}
    json.dumps(groups)  # goes into the report JSON as it is


def test_source_file_and_source_attribute_only_when_given():
    groups = group_findings([
        {"check": "profile_actions", "severity": "fail", "file": "1-T1/a.dcm",
         "tag": "PatientName (0010,0010)", "message": "should be empty"},
        {"check": "profile_actions", "severity": "fail", "file": "1-T1/b.dcm",
         "tag": "PatientName (0010,0010)", "message": "should be empty", "source_file": "",
         "source_attribute": ""}])
    assert groups == [{"check": "profile_actions", "severity": "fail",
                       "tag": "PatientName (0010,0010)", "message": "should be empty",
                       "files": 2, "examples": ["1-T1/a.dcm", "1-T1/b.dcm"],
                       "file_list": [{"file": "1-T1/a.dcm"}, {"file": "1-T1/b.dcm"}]}]


def test_different_messages_are_kept_apart():
    groups = group_findings([
        leak("a.dcm"), leak("b.dcm", message="holds the source's PatientID (value not shown)"),
        leak("c.dcm")])
    assert [(group["message"], group["files"], group["examples"]) for group in groups] == [
        (LEAK_MESSAGE, 2, ["a.dcm", "c.dcm"]),
        ("holds the source's PatientID (value not shown)", 1, ["b.dcm"])]


def test_tags_source_attributes_checks_and_severities_are_kept_apart():
    findings = [
        leak("a.dcm"),
        leak("a.dcm", tag="StudyDescription (0008,1030)"),
        leak("a.dcm", source_attribute="OtherPatientIDs"),
        leak("a.dcm", severity="warn"),
        {**leak("a.dcm"), "check": "staff_name"},
        leak("b.dcm"),
    ]
    groups = group_findings(findings)
    assert len(groups) == 5
    assert [group["files"] for group in groups] == [2, 1, 1, 1, 1]
    assert [(group["check"], group["severity"], group["tag"], group.get("source_attribute"))
            for group in groups] == [
        ("identifier_leak", "fail", "ImageComments (0020,4000)", "PatientName"),
        ("identifier_leak", "fail", "StudyDescription (0008,1030)", "PatientName"),
        ("identifier_leak", "fail", "ImageComments (0020,4000)", "OtherPatientIDs"),
        ("staff_name", "fail", "ImageComments (0020,4000)", "PatientName"),
        ("identifier_leak", "warn", "ImageComments (0020,4000)", "PatientName")]


def test_fail_before_warn_then_order_of_first_appearance():
    findings = [
        leak("w1.dcm", severity="warn", tag="StudyDescription (0008,1030)"),
        leak("f1.dcm", tag="SeriesDescription (0008,103E)"),
        leak("w2.dcm", severity="warn", tag="ProtocolName (0018,1030)"),
        leak("f2.dcm", tag="ImageComments (0020,4000)"),
        leak("w3.dcm", severity="warn", tag="StudyDescription (0008,1030)"),
        leak("f3.dcm", tag="SeriesDescription (0008,103E)"),
    ]
    groups = group_findings(findings)
    assert [(group["severity"], group["tag"], group["examples"]) for group in groups] == [
        ("fail", "SeriesDescription (0008,103E)", ["f1.dcm", "f3.dcm"]),
        ("fail", "ImageComments (0020,4000)", ["f2.dcm"]),
        ("warn", "StudyDescription (0008,1030)", ["w1.dcm", "w3.dcm"]),
        ("warn", "ProtocolName (0018,1030)", ["w2.dcm"])]
    # The same findings give the same groups every time (the report is deterministic).
    assert group_findings(findings) == groups


def test_session_level_findings_group_with_no_files():
    label = {"check": "labels", "severity": "fail", "file": "",
             "tag": "sessions.tsv column 'subject'",
             "message": "holds the source's PatientID (value not shown)",
             "source_attribute": "PatientID"}
    private = {"check": "private_tags", "severity": "warn", "file": "", "tag": "private tags",
               "message": "4 private element(s) remain from 1 private creator block(s)"}
    groups = group_findings([private, label, label])
    assert groups == [
        {**{key: label[key] for key in ("check", "severity", "tag", "message",
                                        "source_attribute")},
         "files": 0, "examples": [], "file_list": []},
        {**{key: private[key] for key in ("check", "severity", "tag", "message")},
         "files": 0, "examples": [], "file_list": []}]


def test_a_group_with_and_without_files_counts_only_the_files():
    missing = {"check": "inventory", "severity": "fail", "tag": "",
               "message": "no DICOM file was staged for this session"}
    groups = group_findings([{**missing, "file": ""}, {**missing, "file": "x.dcm"}])
    assert [(group["files"], group["examples"], group["file_list"]) for group in groups] == [
        (1, ["x.dcm"], [{"file": "x.dcm"}])]


def test_examples_are_the_first_three_files_in_order():
    names = files(5)
    groups = group_findings(leak(name) for name in names)
    assert groups[0]["examples"] == names[:3]
    assert [entry["file"] for entry in groups[0]["file_list"]] == names
