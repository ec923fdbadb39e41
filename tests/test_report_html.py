"""The run's HTML report (``{results}/report.html``): content, escaping, order, permissions,
and what a browser (headless Chromium) actually shows."""

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from deidpipe.approvals import append_decision
from deidpipe.files import sha256_file
from deidpipe.report import write_summary
from deidpipe.sheet import SessionRow
from deidpipe.verification.registry import WITHHELD

CHROMIUM = Path("/usr/bin/chromium")
GROUP, PROJECT = "demo", "deid-demo"
PROFILE = {"file": "PennBrainScienceCenter.yaml", "sha256": "ab" * 32, "version": "v1.0-test"}
SCRIPT_VALUE = "<script>document.title='pwned'</script> & co"
SECTION_IDS = ["phi-log", "counts", "sessions", "findings", "free-text", "private-tags",
               "burned-in", "basic-profile-audit", "changes", "checks"]
SECTION_HEADINGS = ["Warning: the PHI log holds identifiers", "Counts", "Sessions", "Findings",
                    "Free text to review", "Private tags", "Possible burned-in text",
                    "DICOM Basic Profile audit", "What changed", "Checks"]
PHI_LOG = "/secure/phi-log/demo/deid-demo/sub-003/ses-01.tsv"


# ---- a small DOM, so assertions read what a browser would show -------------------------------

class Node:
    def __init__(self, tag: str, attrs: dict[str, str]) -> None:
        self.tag, self.attrs = tag, attrs
        self.children: list[Node | str] = []

    def text(self) -> str:
        return "".join(child if isinstance(child, str) else child.text()
                       for child in self.children)

    def iter(self, tag: str | None = None) -> Iterator["Node"]:
        for child in self.children:
            if isinstance(child, Node):
                if tag is None or child.tag == tag:
                    yield child
                yield from child.iter(tag)

    def by_id(self, element_id: str) -> "Node":
        matches = [node for node in self.iter() if node.attrs.get("id") == element_id]
        assert len(matches) == 1, f"expected one element with id {element_id!r}"
        return matches[0]

    def table_rows(self) -> list[list[str]]:
        """Body rows of the first table below this node, as cell texts."""
        table = next(self.iter("table"))
        return [[cell.text() for cell in row.iter("td")]
                for body in table.iter("tbody") for row in body.iter("tr")]


class DomBuilder(HTMLParser):
    VOID = {"meta", "link", "br", "img", "hr", "input", "col", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {name: value or "" for name, value in attrs})
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(page: str) -> Node:
    builder = DomBuilder()
    builder.feed(page)
    builder.close()
    return builder.root


# ---- a results folder with hand-written reports ----------------------------------------------

def session(row: int, subject: str) -> SessionRow:
    return SessionRow(row=row, group=GROUP, project=PROJECT, subject=subject, session="ses-01",
                      dicom_dir=f"/data/{subject}")


def labels(subject: str) -> dict[str, str]:
    return {"group": GROUP, "project": PROJECT, "subject": subject, "session": "ses-01"}


def old_pass_report(subject: str) -> dict:
    """A report from before the NEW fields (checks had 'default_severity')."""
    return {"session": labels(subject), "status": "pass",
            "files": {"staged": 2, "skipped": 0, "errors": 0}, "profile": PROFILE,
            "identifier_values_searched": 5, "identifier_values_too_short_to_search": 0,
            "checks": {"identifier_leak": {"default_severity": "fail", "findings": 0}},
            "findings": []}


def new_report(subject: str, status: str, **fields) -> dict:
    return {"session": labels(subject), "status": status,
            "files": {"staged": 3, "skipped": 1, "errors": 0}, "profile": PROFILE,
            "engine": "fw-file-rs 0.9.1",
            "identifier_values_searched": 5, "identifier_values_too_short_to_search": 1,
            "checks": {"identifier_leak": {"severity": "fail", "findings": 0}},
            "findings": [], "private_tags": {"policy": "warn", "elements": 0, "creators": []},
            "burned_in": [], "free_text": [], "free_text_withheld": 0,
            "basic_profile_audit": [], "changes": [], "phi_log": None, **fields}


WARN_REPORT = new_report(
    "sub-002", "warn",
    findings=[{"check": "private_tags", "severity": "warn", "file": "", "tag": "private tags",
               "message": "4 private element(s) remain from 1 private creator block(s)"},
              {"check": "burned_in_risk", "severity": "warn", "file": "1-SC/1.2.3.SC.dcm",
               "tag": "", "message": "secondary capture: look for burned-in text",
               "source_file": "dicom/sc.dcm"}],
    private_tags={"policy": "warn", "elements": 4, "known_safe": 1, "no_text": 1,
                  "to_review": 2,
                  "knowledge_base": {"name": "TCIA Posda private tag dispositions",
                                     "version": "PosdaTools 0377dd9, April 2025",
                                     "rows": 5055},
                  "creators": [
                      {"creator": "GEMS_IDEN_01", "group": "0009", "elements": 4, "files": 2}],
                  "review": [{"creator": "GEMS_IDEN_01", "group": "0009",
                              "element": "(0009,xx02)", "name": "SuiteId", "vr": "SH",
                              "knowledge_base": "TCIA deletes it", "files": 2,
                              "values": [{"value": "CT01", "files": 2}], "more_values": 0,
                              "values_withheld": 1}]},
    burned_in=[{"file": "1-SC/1.2.3.SC.dcm", "reason": "secondary capture", "severity": "warn"}],
    free_text=[{"attribute": "SeriesDescription", "tag": "(0008,103E)", "value": "T1w MPRAGE",
                "files": 2},
               {"attribute": "SeriesDescription", "tag": "(0008,103E)", "value": "Ax FLAIR",
                "files": 1}],
    basic_profile_audit=[{"attribute": "StudyDate", "tag": "(0008,0020)", "action": "Z",
                          "files": 3}],
    changes=[{"attribute": "PatientName", "tag": "(0010,0010)", "action": "emptied",
              "files": 3}])
FAIL_REPORT = new_report(
    "sub-003", "fail",
    findings=[{"check": "name_part", "severity": "warn", "file": "1-T1/1.2.4.MR.dcm",
               "tag": "StudyDescription (0008,1030)", "message": "holds a part of the source's "
               "PatientName (value not shown)", "source_attribute": "PatientName"},
              {"check": "identifier_leak", "severity": "fail", "file": "1-T1/1.2.4.MR.dcm",
               "tag": "ImageComments (0020,4000)", "message": "holds the source's PatientID "
               "(value not shown)", "source_attribute": "PatientID",
               "source_file": "dicom/t1-1.dcm"}],
    free_text=[{"attribute": "SeriesDescription", "tag": "(0008,103E)", "value": "T1w MPRAGE",
                "files": 2},
               {"attribute": "ImageComments", "tag": "(0020,4000)", "value": SCRIPT_VALUE,
                "files": 1}],
    free_text_withheld=1,
    basic_profile_audit=[{"attribute": "StudyDate", "tag": "(0008,0020)", "action": "Z",
                          "files": 2}],
    changes=[{"attribute": "PatientName", "tag": "(0010,0010)", "action": "emptied",
              "files": 2},
             {"attribute": "PatientBirthDate", "tag": "(0010,0030)", "action": "removed",
              "files": 2}],
    phi_log=PHI_LOG)


def write_session(results: Path, row: SessionRow, report: dict | None,
                  uploaded: bool | None = None) -> None:
    where = f"{row.group}/{row.project}/{row.subject}/{row.session}.json"
    if report is not None:
        (results / "verify" / where).parent.mkdir(parents=True, exist_ok=True)
        (results / "verify" / where).write_text(json.dumps(report))
    if uploaded is not None:
        (results / "upload" / where).parent.mkdir(parents=True, exist_ok=True)
        (results / "upload" / where).write_text(json.dumps({"uploaded": uploaded}))


@pytest.fixture
def batch(tmp_path: Path) -> tuple[Path, list[str]]:
    """Sheet order pass, warn, fail, not verified: the page must reorder them."""
    results = tmp_path / "results"
    sessions = [session(2, "sub-001"), session(3, "sub-002"), session(4, "sub-003"),
                session(5, "sub-004")]
    write_session(results, sessions[0], old_pass_report("sub-001"), uploaded=True)
    write_session(results, sessions[1], WARN_REPORT, uploaded=True)
    write_session(results, sessions[2], FAIL_REPORT, uploaded=False)
    write_session(results, sessions[3], None)
    lines = write_summary(sessions, results, upload=True)
    return results / "report.html", lines


def session_rows(dom: Node) -> list[list[str]]:
    return dom.by_id("sessions").table_rows()


# ---- the page as written ---------------------------------------------------------------------

def test_report_is_written_owner_only_and_named_on_the_console(batch):
    report, lines = batch
    assert stat.S_IMODE(os.stat(report).st_mode) == 0o600
    assert lines[-1] == f"Report: {report}"
    assert lines[-2] == f"Summary: {report.parent / 'summary.tsv'}"
    summary = (report.parent / "summary.tsv").read_text().splitlines()
    assert [line.split("\t")[2] for line in summary[1:]] == ["sub-003", "sub-004", "sub-002",
                                                             "sub-001"]


def test_page_is_self_contained_and_escapes_values(batch):
    report, _ = batch
    page = report.read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt; &amp; co" in page
    for external in ("http://", "https://", "//cdn", "src=", "<link", "@import", "url("):
        assert external not in page
    dom = parse(page)
    assert not list(dom.iter("script"))
    assert next(dom.iter("title")).text().startswith("De-identification report: run of ")


def test_sections_come_in_order_each_with_a_heading(batch):
    dom = parse(batch[0].read_text(encoding="utf-8"))
    sections = list(dom.iter("section"))
    assert [section.attrs["id"] for section in sections] == SECTION_IDS
    assert [next(section.iter("h2")).text() for section in sections] == SECTION_HEADINGS
    for section in sections:  # each says what to do, under its heading
        explanation = next(section.iter("p"))
        assert explanation.attrs.get("class") == "explain" and explanation.text()
    assert "warning-box" in dom.by_id("phi-log").attrs["class"]


def test_header_names_run_time_and_profile(batch):
    header = parse(batch[0].read_text(encoding="utf-8")).by_id("run")
    assert next(header.iter("h1")).text().startswith("De-identification report: run of 20")
    details = [node.text() for node in header.iter("dd")]
    assert PROFILE["file"] in details and PROFILE["version"] in details
    assert PROFILE["sha256"] in details and "fw-file-rs 0.9.1" in details


def test_counts_and_session_order_status_words_and_links(batch):
    report, _ = batch
    dom = parse(report.read_text(encoding="utf-8"))
    assert dom.by_id("counts").table_rows() == [["1", "1", "1", "1", "2", "4"]]
    rows = session_rows(dom)
    assert [(row[0], row[3], row[6]) for row in rows] == [
        ("4", "sub-003", "fail"), ("5", "sub-004", "not verified"), ("3", "sub-002", "warn"),
        ("2", "sub-001", "pass")]
    assert [row[7] for row in rows] == ["no (blocked by verification)", "no", "yes", "yes"]
    assert [row[8] for row in rows] == ["", "", "waiting: deidpipe approve sub-002 ses-01 "
                                        "--by NAME", ""]
    assert rows[1][5] == "not known" and rows[1][9] == "none (not verified)"
    hrefs = [link.attrs["href"] for link in dom.by_id("sessions").iter("a")]
    assert hrefs == [f"verify/{GROUP}/{PROJECT}/{subject}/ses-01.json"
                     for subject in ("sub-003", "sub-002", "sub-001")]
    for href in hrefs:  # relative to the page, and pointing at the report
        assert json.loads((report.parent / href).read_text())["status"] in ("fail", "warn",
                                                                            "pass")


FINDING_COLUMNS = ["Severity", "Check", "Place (tag path)", "Source attribute", "Files",
                   "Example files", "Message"]
LEAK_MESSAGE = "holds the source's PatientName (value not shown)"


def leak_findings(count: int) -> list[dict[str, str]]:
    """One name in ImageComments of every file of a ``count``-file session."""
    return [{"check": "identifier_leak", "severity": "fail", "file": f"1-T1/1.2.{number}.MR.dcm",
             "tag": "ImageComments (0020,4000)", "message": LEAK_MESSAGE,
             "source_attribute": "PatientName", "source_file": f"dicom/t1-{number}.dcm"}
            for number in range(1, count + 1)]


def findings_page(tmp_path: Path, report: dict) -> Path:
    results = tmp_path / "results"
    row = session(2, "sub-001")
    write_session(results, row, report)
    write_summary([row], results, upload=False)
    return results / "report.html"


def table_headers(node: Node) -> list[str]:
    return [cell.text() for cell in next(node.iter("thead")).iter("th")]


def test_findings_per_session_grouped_fail_first(batch):
    findings = parse(batch[0].read_text(encoding="utf-8")).by_id("findings")
    titles = [heading.text() for heading in findings.iter("h3")]
    assert [title.split(" ")[0] for title in titles] == [
        f"{GROUP}/{PROJECT}/sub-003/ses-01", f"{GROUP}/{PROJECT}/sub-002/ses-01"]
    assert titles[0].endswith("fail, 2 findings in 2 groups")
    assert titles[1].endswith("warn, 2 findings in 2 groups")
    assert table_headers(findings) == FINDING_COLUMNS
    tables = [[[cell.text() for cell in row.iter("td")] for row in body.iter("tr")]
              for body in findings.iter("tbody")]
    # Old reports (no finding_groups) are grouped on the page; fail before warn.
    assert tables[0] == [
        ["fail", "identifier_leak", "ImageComments (0020,4000)", "PatientID", "1",
         "1-T1/1.2.4.MR.dcm", "holds the source's PatientID (value not shown)"],
        ["warn", "name_part", "StudyDescription (0008,1030)", "PatientName", "1",
         "1-T1/1.2.4.MR.dcm", "holds a part of the source's PatientName (value not shown)"]]
    # A finding about the whole session names no file, and says so.
    assert tables[1] == [
        ["warn", "private_tags", "private tags", "", "0", "none: about the whole session",
         "4 private element(s) remain from 1 private creator block(s)"],
        ["warn", "burned_in_risk", "", "", "1", "1-SC/1.2.3.SC.dcm",
         "secondary capture: look for burned-in text"]]


def test_312_findings_of_one_kind_are_one_row_with_three_examples(tmp_path):
    page = findings_page(tmp_path, new_report("sub-001", "fail", findings=leak_findings(312)))
    findings = parse(page.read_text(encoding="utf-8")).by_id("findings")
    assert [heading.text() for heading in findings.iter("h3")] == [
        f"{GROUP}/{PROJECT}/sub-001/ses-01 (sessions.tsv row 2): fail, "
        "312 findings in 1 group"]
    assert findings.table_rows() == [
        ["fail", "identifier_leak", "ImageComments (0020,4000)", "PatientName", "312",
         "1-T1/1.2.1.MR.dcm\n1-T1/1.2.2.MR.dcm\n1-T1/1.2.3.MR.dcm\nand 309 more",
         LEAK_MESSAGE]]
    cells = list(next(findings.iter("tbody")).iter("td"))
    assert cells[5].attrs["class"] == "value files"  # monospace, one file a line
    # The page names three files, not 312 (the report JSON lists them all).
    assert "1.2.4.MR.dcm" not in page.read_text(encoding="utf-8")


def test_finding_groups_of_the_report_are_shown_as_written(tmp_path):
    findings = leak_findings(4)
    groups = [{"check": "identifier_leak", "severity": "fail",
               "tag": "ImageComments (0020,4000)", "message": LEAK_MESSAGE,
               "source_attribute": "PatientName", "files": 4,
               "examples": [finding["file"] for finding in findings[:3]],
               "file_list": [{"file": finding["file"]} for finding in findings]},
              {"check": "labels", "severity": "fail", "tag": "sessions.tsv column 'subject'",
               "message": "holds the source's PatientID (value not shown)",
               "source_attribute": "PatientID", "files": 0, "examples": [], "file_list": []}]
    report = new_report("sub-001", "fail", findings=findings, finding_groups=groups)
    dom = parse(findings_page(tmp_path, report).read_text(encoding="utf-8"))
    findings_node = dom.by_id("findings")
    assert next(findings_node.iter("h3")).text().endswith("4 findings in 2 groups")
    rows = findings_node.table_rows()
    assert [row[4:6] for row in rows] == [
        ["4", "1-T1/1.2.1.MR.dcm\n1-T1/1.2.2.MR.dcm\n1-T1/1.2.3.MR.dcm\nand 1 more"],
        ["0", "none: about the whole session"]]
    assert rows[1][:4] == ["fail", "labels", "sessions.tsv column 'subject'", "PatientID"]


def test_finding_values_are_escaped(tmp_path):
    odd = {"check": "integrity", "severity": "fail", "file": "<b>x</b>.dcm",
           "tag": SCRIPT_VALUE, "message": "<img src=x onerror=alert(1)> & more"}
    page = findings_page(tmp_path, new_report("sub-001", "fail", findings=[odd])).read_text(
        encoding="utf-8")
    assert "<script" not in page.lower() and "<img" not in page and "<b>" not in page
    assert parse(page).by_id("findings").table_rows() == [
        ["fail", "integrity", SCRIPT_VALUE, "", "1", "<b>x</b>.dcm", odd["message"]]]


def test_free_text_is_aggregated_sorted_and_withheld_values_counted(batch):
    free_text = parse(batch[0].read_text(encoding="utf-8")).by_id("free-text")
    assert free_text.table_rows() == [
        ["ImageComments", "(0020,4000)", SCRIPT_VALUE, "1", "1"],
        ["SeriesDescription", "(0008,103E)", "Ax FLAIR", "1", "1"],
        ["SeriesDescription", "(0008,103E)", "T1w MPRAGE", "4", "2"]]
    assert "1 value(s) are not shown because they hold an identifier" in free_text.text()
    assert "listed as findings instead" in free_text.text()
    # The pass session's report predates free text: said so, not passed off as "none".
    assert "1 session(s) have a verification report from an older version" in free_text.text()


def test_private_tags_burned_in_audit_changes_and_phi_log(batch):
    dom = parse(batch[0].read_text(encoding="utf-8"))
    warn_session = f"{GROUP}/{PROJECT}/sub-002/ses-01"
    private_tags = dom.by_id("private-tags")
    assert private_tags.table_rows() == [
        [warn_session, "GEMS_IDEN_01", "(0009,xx02)", "SuiteId", "SH", "TCIA deletes it", "2",
         "CT01   (2 file(s))\n(the values in 1 file(s) are not shown: they hold an "
         "identifier, see Findings)"]]
    all_creators = list(private_tags.iter("table"))[1]
    assert [[cell.text() for cell in row.iter("td")] for row in all_creators.iter("tr")
            if list(row.iter("td"))] == [[warn_session, "GEMS_IDEN_01", "0009", "4", "2"]]
    assert "Policy for private tags in this run: warn" in private_tags.text()
    assert ("TCIA Posda private tag dispositions (PosdaTools 0377dd9, April 2025, 5055 "
            "elements)") in private_tags.text()
    assert "of 4 private element(s), 1 are known to be safe and 1 hold no text" in (
        " ".join(private_tags.text().split()))
    assert dom.by_id("burned-in").table_rows() == [
        [warn_session, "1-SC/1.2.3.SC.dcm", "secondary capture", "warn"]]
    audit = dom.by_id("basic-profile-audit")
    assert audit.table_rows() == [["StudyDate", "(0008,0020)", "Z", "2", "5"]]
    assert "never fails a session" in audit.text()
    assert dom.by_id("changes").table_rows() == [
        ["PatientBirthDate", "(0010,0030)", "removed", "2"],
        ["PatientName", "(0010,0010)", "emptied", "5"]]
    # Old reports give 'default_severity', new ones 'severity': both are shown.
    assert dom.by_id("checks").table_rows() == [["identifier_leak", "fail", ""]]
    phi_log = dom.by_id("phi-log")
    assert [item.text() for item in phi_log.iter("li")] == [PHI_LOG]
    assert "holds patient identifiers" in phi_log.text()


def test_empty_sections_say_so_and_no_phi_warning(tmp_path):
    results = tmp_path / "results"
    row = session(2, "sub-001")
    write_session(results, row, new_report("sub-001", "pass"))
    write_summary([row], results, upload=False)
    dom = parse((results / "report.html").read_text(encoding="utf-8"))
    assert [section.attrs["id"] for section in dom.iter("section")] == SECTION_IDS[1:]
    expected = {"findings": "No session has findings.",
                "free-text": "No free-text values remain.",
                "private-tags": "No private tags remain.",
                "burned-in": "No image was flagged for possible burned-in text.",
                "basic-profile-audit": "No attribute of the Basic Profile remains populated.",
                "changes": "No attribute was changed."}
    for section_id, sentence in expected.items():
        section = dom.by_id(section_id)
        assert sentence in [paragraph.text() for paragraph in section.iter("p")]
        assert not list(section.iter("table"))
    assert "older version" not in dom.by_id("free-text").text()


def test_withheld_label_appears_nowhere_not_even_in_a_link(tmp_path):
    results = tmp_path / "results"
    flagged = session(2, "sub-JDOE")  # the sheet's label holds (say) the patient's name
    report = new_report(WITHHELD, "fail", findings=[
        {"check": "labels", "severity": "fail", "file": "", "tag": "subject label",
         "message": "the subject label holds the source's PatientName"}])
    write_session(results, flagged, report)
    write_summary([flagged], results, upload=False)
    page = (results / "report.html").read_text(encoding="utf-8")
    assert "JDOE" not in page
    rows = session_rows(parse(page))
    assert rows[0][3] == WITHHELD
    assert rows[0][9] == "not linked (its file name holds an identifier)"


# ---- review of warned sessions: summary.tsv, console, Sessions section ------------------------

def decided(sheet: Path, results: Path, row: SessionRow, decision: str, by: str,
            when: str = "2025-05-01T14:30:00+02:00", sha256: str = "") -> None:
    """A line of the approvals sheet for the session's current verification report."""
    report = results / "verify" / f"{row.path}.json"
    append_decision(sheet, {"group": row.group, "project": row.project, "subject": row.subject,
                            "session": row.session, "decision": decision, "by": by,
                            "when": when,
                            "report_sha256": sha256 or sha256_file(report)})


def summary_of(results: Path) -> dict[str, dict[str, str]]:
    lines = (results / "summary.tsv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    return {cells[2]: dict(zip(header, cells, strict=True))
            for cells in (line.split("\t") for line in lines[1:])}


@pytest.fixture
def reviews(tmp_path: Path) -> tuple[Path, list[str]]:
    """Warned sessions in every review state, plus a pass and a fail."""
    results, sheet = tmp_path / "results", tmp_path / "approvals.tsv"
    subjects = ["sub-001", "sub-002", "sub-003", "sub-004", "sub-005", "sub-006", "sub-007"]
    rows = [session(number, subject) for number, subject in enumerate(subjects, start=2)]
    statuses = ["pass", "warn", "warn", "warn", "warn", "warn", "fail"]
    for row, status in zip(rows, statuses, strict=True):
        write_session(results, row, new_report(row.subject, status))
    decided(sheet, results, rows[2], "approve", "Ann <b>Reviewer</b>")
    decided(sheet, results, rows[3], "approve", "Ann", sha256="0" * 64)  # an earlier report
    decided(sheet, results, rows[4], "approve", "Ann")
    decided(sheet, results, rows[4], "reject", "Bob", when="2025-05-02T09:15:00Z")
    flagged = session(9, "sub-JDOE")  # its label holds (say) the patient's name
    write_session(results, flagged, new_report(WITHHELD, "warn"))
    lines = write_summary([*rows, flagged], results, upload=False, approvals=sheet)
    return results, lines


def test_summary_review_column_says_where_each_warned_session_stands(reviews):
    results, _ = reviews
    summary = summary_of(results)
    assert list(next(iter(summary.values()))) == ["group", "project", "subject", "session",
                                                  "files", "status", "uploaded", "review"]
    assert {subject: row["review"] for subject, row in summary.items()} == {
        "sub-007": "",
        "sub-002": "waiting: deidpipe approve sub-002 ses-01 --by NAME",
        "sub-003": "approved by Ann <b>Reviewer</b> on 2025-05-01 14:30+02:00",
        "sub-004": "approval no longer applies (staged again): approve again",
        "sub-005": "rejected by Bob on 2025-05-02 09:15+00:00",
        "sub-006": "waiting: deidpipe approve sub-006 ses-01 --by NAME",
        WITHHELD: "waiting: see sessions.tsv row 9",
        "sub-001": ""}
    assert "JDOE" not in (results / "summary.tsv").read_text()


def test_console_names_the_sessions_waiting_for_review_with_the_command(reviews):
    results, lines = reviews
    report = results / "report.html"
    assert (f"  warn: {GROUP}/{PROJECT}/sub-003/ses-01 (approved by Ann <b>Reviewer</b> on "
            "2025-05-01 14:30+02:00)") in lines
    assert f"  warn: {GROUP}/{PROJECT}/sub-005/ses-01 (rejected by Bob on 2025-05-02 " \
           "09:15+00:00)" in lines
    start = lines.index(f"4 warned session(s) wait for review before upload: read their "
                        f"warnings in {report}, then approve each (or refuse it with --reject):")
    assert lines[start + 1:start + 5] == [
        "  deidpipe approve sub-002 ses-01 --by NAME",
        "  deidpipe approve sub-004 ses-01 --by NAME   (staged and verified again since the "
        "last decision)",
        "  deidpipe approve sub-006 ses-01 --by NAME",
        "  sessions.tsv row 9: a label holds an identifier, so it cannot be approved; give "
        "the session another label"]
    assert not any("JDOE" in line for line in lines)


def test_sessions_section_shows_the_review_escaped(reviews):
    results, _ = reviews
    page = (results / "report.html").read_text(encoding="utf-8")
    assert "<b>" not in page and "Ann &lt;b&gt;Reviewer&lt;/b&gt;" in page
    assert "JDOE" not in page
    section = parse(page).by_id("sessions")
    assert table_headers(section)[7:] == ["Uploaded", "Review", "Verification report", "Images"]
    review = {row[3]: row[8] for row in section.table_rows()}
    assert review["sub-003"] == "approved by Ann <b>Reviewer</b> on 2025-05-01 14:30+02:00"
    assert review["sub-005"] == "rejected by Bob on 2025-05-02 09:15+00:00"
    assert review[WITHHELD] == "waiting: see sessions.tsv row 9"
    assert "deidpipe approve SUBJECT SESSION --by NAME" in section.text()


def test_review_with_upload_warned_and_upload_records(tmp_path):
    results, sheet = tmp_path / "results", tmp_path / "approvals.tsv"
    waiting, rejected = session(2, "sub-001"), session(3, "sub-002")
    for row in (waiting, rejected):
        write_session(results, row, new_report(row.subject, "warn"))
    decided(sheet, results, rejected, "reject", "Bob")
    for row, held in ((waiting, "waiting"), (rejected, "rejected")):
        (results / "upload" / f"{row.path}.json").parent.mkdir(parents=True, exist_ok=True)
        (results / "upload" / f"{row.path}.json").write_text(json.dumps(
            {"uploaded": False, "held": held, "reason": "held: ..."}))
    lines = write_summary([waiting, rejected], results, upload=True, approvals=sheet)
    summary = summary_of(results)
    assert summary["sub-001"]["uploaded"] == "no (waiting for review)"
    assert summary["sub-002"]["uploaded"] == "no (rejected)"
    assert any("wait for review" in line for line in lines)
    # upload_warned true: no review is needed, but a rejection still shows.
    lines = write_summary([waiting, rejected], results, upload=True, approvals=sheet,
                          upload_warned=True)
    summary = summary_of(results)
    assert summary["sub-001"]["review"] == "not required (upload_warned is true)"
    assert summary["sub-002"]["review"].startswith("rejected by Bob on ")
    assert not any("wait for review" in line for line in lines)


def test_a_malformed_approvals_sheet_is_named_not_fatal(tmp_path):
    results, sheet = tmp_path / "results", tmp_path / "approvals.tsv"
    row = session(2, "sub-001")
    write_session(results, row, new_report(row.subject, "warn"))
    sheet.write_text("group\tproject\n")
    lines = write_summary([row], results, upload=False, approvals=sheet)
    assert summary_of(results)["sub-001"]["review"] == (
        "not known: the approvals sheet has an error")
    assert any(line.startswith("The review of warned sessions is not known: approvals sheet "
                               f"{sheet} line 1") for line in lines)


def test_sessions_verified_with_different_profiles_show_each(tmp_path):
    results = tmp_path / "results"
    first, second = session(2, "sub-001"), session(3, "sub-002")
    other = {**PROFILE, "sha256": "cd" * 32, "version": "v3.0-test"}
    write_session(results, first, new_report("sub-001", "pass"))
    write_session(results, second, new_report("sub-002", "pass", profile=other))
    write_summary([first, second], results, upload=False)
    header = parse((results / "report.html").read_text(encoding="utf-8")).by_id("run")
    details = [node.text() for node in header.iter("dd")]
    assert {PROFILE["sha256"], other["sha256"], "v1.0-test", "v3.0-test"} <= set(details)
    assert "different profiles" in header.text()


def test_no_verified_session_still_gives_a_page(tmp_path):
    results = tmp_path / "results"
    lines = write_summary([session(2, "sub-001")], results, upload=False)
    dom = parse((results / "report.html").read_text(encoding="utf-8"))
    assert "not known: no session was verified" in dom.by_id("run").text()
    assert dom.by_id("counts").table_rows() == [["0", "0", "0", "1", "0", "1"]]
    assert lines[-1] == f"Report: {results / 'report.html'}"


# ---- the page as a browser shows it ----------------------------------------------------------

# Headless, and no connection attempts (this machine has no network).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def render_in_chromium(page: Path, tmp_path: Path) -> str:
    """The DOM after Chromium has loaded (and run whatever it would run in) the page."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install "
                    "chromium; .ci/run does) or deselect with -m 'not browser'")
    profile_dir = tmp_path / "chromium-profile"
    profile_dir.mkdir()
    result = subprocess.run(
        [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", "--dump-dom",
         page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "<html" in result.stdout, result.stderr[-2000:]
    return result.stdout


@pytest.mark.browser
def test_chromium_shows_sections_rows_and_the_value_as_text(batch, tmp_path):
    report, _ = batch
    dom = parse(render_in_chromium(report, tmp_path))
    assert [heading.text() for heading in dom.iter("h2")] == SECTION_HEADINGS
    # The value's script did not run (it would retitle the page) and is shown as text.
    title = next(dom.iter("title")).text()
    assert "pwned" not in title and title.startswith("De-identification report: run of ")
    assert not list(dom.iter("script"))
    assert dom.by_id("free-text").table_rows()[0][2] == SCRIPT_VALUE
    rows = session_rows(dom)
    assert [(row[3], row[6]) for row in rows] == [
        ("sub-003", "fail"), ("sub-004", "not verified"), ("sub-002", "warn"),
        ("sub-001", "pass")]
    assert "holds patient identifiers" in dom.by_id("phi-log").text()
    assert dom.by_id("findings").table_rows()[0][:5] == [
        "fail", "identifier_leak", "ImageComments (0020,4000)", "PatientID", "1"]


@pytest.mark.browser
def test_chromium_shows_312_findings_as_one_row(tmp_path):
    page = findings_page(tmp_path, new_report("sub-001", "fail", findings=leak_findings(312)))
    findings = parse(render_in_chromium(page, tmp_path)).by_id("findings")
    assert next(findings.iter("h3")).text().endswith("fail, 312 findings in 1 group")
    rows = findings.table_rows()
    assert len(rows) == 1 and rows[0][4] == "312"
    assert rows[0][5].splitlines() == ["1-T1/1.2.1.MR.dcm", "1-T1/1.2.2.MR.dcm",
                                       "1-T1/1.2.3.MR.dcm", "and 309 more"]


def test_sessions_link_their_review_page_in_staging(tmp_path):
    results = tmp_path / "results"
    rows = [session(2, "sub-001"), session(3, "sub-002")]
    page_path = tmp_path / "staging" / GROUP / PROJECT / "sub-001" / "ses-01.review.html"
    write_session(results, rows[0], new_report("sub-001", "pass", review_page=str(page_path)))
    write_session(results, rows[1], new_report("sub-002", "pass", review_page=WITHHELD))
    write_summary(rows, results, upload=False)
    section = parse((results / "report.html").read_text(encoding="utf-8")).by_id("sessions")
    links = [node.attrs.get("href") for node in section.iter("a")]
    assert f"../staging/{GROUP}/{PROJECT}/sub-001/ses-01.review.html" in links
    assert [row[-1] for row in section.table_rows()] == [
        "review page", "not linked (its path holds an identifier)"]
