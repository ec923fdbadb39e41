"""The approvals sheet (reading, hand-written lines, malformed lines) and `deidpipe approve`."""

import hashlib
import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from deidpipe.approvals import (
    APPROVAL_COLUMNS,
    append_decision,
    parse_approvals,
    read_approvals,
    review_of,
)
from deidpipe.cli import main
from deidpipe.errors import PipelineError

SHA_A = "a" * 64
SHA_B = "b" * 64
KEY = ("demo", "deid-demo", "sub-002", "ses-01")
HEADER = "\t".join(APPROVAL_COLUMNS) + "\n"


def line(*cells: str) -> str:
    return "\t".join(cells) + "\n"


GOOD = line(*KEY, "approve", "Test Reviewer", "2025-05-01T14:30:00+02:00", SHA_A)


# ---- reading ---------------------------------------------------------------------------------

def test_lines_written_by_the_command_are_read(tmp_path):
    sheet = tmp_path / "approvals.tsv"
    sheet.write_text(HEADER + GOOD + line(*KEY, "reject", "TR", "2025-05-02T09:00:00+00:00",
                                          SHA_B))
    decisions = read_approvals(sheet)
    assert [(d.line, d.decision, d.by, d.report_sha256) for d in decisions] == [
        (2, "approve", "Test Reviewer", SHA_A), (3, "reject", "TR", SHA_B)]
    assert decisions[0].key == KEY
    assert decisions[0].shown == "approved by Test Reviewer on 2025-05-01 14:30+02:00"
    assert decisions[1].shown == "rejected by TR on 2025-05-02 09:00+00:00"


def test_missing_or_empty_sheet_has_no_decisions(tmp_path):
    assert read_approvals(tmp_path / "approvals.tsv") == []
    assert read_approvals(None) == []
    (tmp_path / "approvals.tsv").write_text("")
    assert read_approvals(tmp_path / "approvals.tsv") == []
    (tmp_path / "approvals.tsv").write_text(HEADER)
    assert read_approvals(tmp_path / "approvals.tsv") == []


def test_hand_written_lines_in_the_forms_people_write(tmp_path):
    """Columns in another order, a notes column, a byte-order mark, CRLF, blank lines, spaces
    around cells, 'Approved' capitalised, a Z time zone, an upper-case sha256."""
    columns = ["notes", "subject", "session", "group", "project", "by", "decision", "when",
               "report_sha256"]
    text = ("\ufeff" + "\t".join(columns) + "\r\n\r\n"
            + "\t".join(["looked at the dose report", " sub-002 ", "ses-01", "demo",
                         "deid-demo", "J. Doe-Smith", "Approved", "2025-05-01T12:30:00Z",
                         SHA_A.upper()]) + "\r\n"
            + "\t".join(["", "sub-002", "ses-01", "demo", "deid-demo", "JDS", "rejected",
                         "2025-05-01 13:00:00-05:00", SHA_A]) + "\r\n")
    sheet = tmp_path / "approvals.tsv"
    sheet.write_bytes(text.encode("utf-8"))
    first, second = read_approvals(sheet)
    assert (first.line, first.key, first.decision, first.by) == (3, KEY, "approve",
                                                                 "J. Doe-Smith")
    assert first.report_sha256 == SHA_A and first.when == "2025-05-01T12:30:00Z"
    assert (second.line, second.decision) == (4, "reject")


def problems_of(text: str, tmp_path: Path) -> str:
    sheet = tmp_path / "approvals.tsv"
    sheet.write_text(text)
    with pytest.raises(PipelineError) as caught:
        read_approvals(sheet)
    return str(caught.value)


def test_malformed_lines_name_file_line_and_column(tmp_path):
    text = (HEADER + GOOD
            + line(*KEY, "approve", "TR", "2025-05-01T14:30:00", SHA_A)        # no time zone
            + line(*KEY, "maybe", "TR", "yesterday", SHA_A[:10])               # three wrong
            + line("demo", "deid-demo", "JOHN DOE", "ses-01", "approve", "", "2025-05-01T14:30"
                   ":00+02:00", SHA_A)                                         # label, by
            + line(*KEY, "approve", "TR", "2025-05-01T14:30:00Z", SHA_A, "x"))  # stray cell
    message = problems_of(text, tmp_path)
    sheet = tmp_path / "approvals.tsv"
    assert message.startswith(f"approvals sheet {sheet} has 7 problem(s)")
    for expected in (
            "line 3, column 7 (when): '2025-05-01T14:30:00' has no time zone",
            "line 4, column 5 (decision): 'maybe' is neither approve nor reject",
            "line 4, column 7 (when): 'yesterday' is not an ISO 8601 date and time",
            "line 4, column 8 (report_sha256): 'aaaaaaaaaa' is not a sha256",
            "line 5, column 3 (subject): is not a valid label",
            "line 5, column 6 (by): is empty",
            "line 6, column 9: the line has 9 cells but the header has 8 columns"):
        assert expected in message, expected
    assert "JOHN DOE" not in message  # a label may be an identifier typed by mistake
    assert "line 2" not in message  # the good line is fine


def test_header_problems_and_encodings(tmp_path):
    message = problems_of("Group\tProject\tsubject\tsession\n" + GOOD, tmp_path)
    assert "line 1 (the header)" in message
    assert "lacks the column(s) group, project, decision, by, when, report_sha256" in message
    assert "lower case" in message
    sheet = tmp_path / "approvals.tsv"
    sheet.write_bytes(HEADER.encode() + GOOD.replace("Test Reviewer", "Jos\xe9").encode("latin-1"))
    with pytest.raises(PipelineError, match=rf"approvals sheet {sheet} line 2 is not UTF-8"):
        read_approvals(sheet)


def decision(decision_word: str, sha: str, by: str = "TR", key=KEY) -> str:
    return line(*key, decision_word, by, "2025-05-01T14:30:00+02:00", sha)


def test_latest_line_for_the_current_report_wins():
    other = ("demo", "deid-demo", "sub-001", "ses-01")
    decisions = parse_approvals(HEADER + decision("approve", SHA_A, "first")
                                + decision("reject", SHA_A, "second")
                                + decision("approve", SHA_B, "for another report")
                                + decision("approve", SHA_A, "other session", other),
                                "approvals.tsv")
    current = review_of(decisions, KEY, SHA_A)
    assert (current.state, current.decision.by) == ("rejected", "second")
    assert review_of(decisions, KEY, SHA_B).state == "approved"
    stale = review_of(decisions, KEY, "c" * 64)
    assert (stale.state, stale.decision.by) == ("stale", "for another report")
    assert review_of(decisions, ("demo", "deid-demo", "sub-009", "ses-01"), SHA_A).state == (
        "waiting")


# ---- writing ---------------------------------------------------------------------------------

def test_appending_keeps_a_hand_written_header_and_its_line_ends(tmp_path):
    sheet = tmp_path / "approvals.tsv"
    sheet.write_bytes(b"notes\tby\t" + "\t".join(
        column for column in APPROVAL_COLUMNS if column != "by").encode() + b"\r\n")
    values = dict(zip(APPROVAL_COLUMNS, [*KEY, "approve", "T R", "2025-05-01T14:30:00Z",
                                         SHA_A], strict=True))
    assert append_decision(sheet, values) == 2
    assert sheet.read_bytes().splitlines(keepends=True)[1] == (
        f"\tT R\t{KEY[0]}\t{KEY[1]}\t{KEY[2]}\t{KEY[3]}\tapprove\t2025-05-01T14:30:00Z\t{SHA_A}"
        "\r\n").encode()
    assert read_approvals(sheet)[0].by == "T R"


def test_a_malformed_sheet_is_not_appended_to(tmp_path):
    sheet = tmp_path / "approvals.tsv"
    sheet.write_text(HEADER + line(*KEY, "maybe", "TR", "2025-05-01T14:30:00Z", SHA_A))
    before = sheet.read_bytes()
    values = dict(zip(APPROVAL_COLUMNS, [*KEY, "approve", "TR", "2025-05-01T14:30:00Z", SHA_A],
                      strict=True))
    with pytest.raises(PipelineError, match="line 2, column 5 \\(decision\\)"):
        append_decision(sheet, values)
    assert sheet.read_bytes() == before


def test_reviewers_writing_at_the_same_time_lose_no_line(tmp_path):
    sheet = tmp_path / "approvals.tsv"

    def write(number: int) -> int:
        return append_decision(sheet, dict(zip(APPROVAL_COLUMNS, [
            *KEY, "approve", f"reviewer {number}", "2025-05-01T14:30:00Z", SHA_A], strict=True)))

    with ThreadPoolExecutor(max_workers=8) as pool:
        numbers = list(pool.map(write, range(40)))
    assert sorted(numbers) == list(range(2, 42))
    assert sorted(d.by for d in read_approvals(sheet)) == sorted(
        f"reviewer {number}" for number in range(40))
    assert not [path for path in tmp_path.iterdir() if path.name != "approvals.tsv"]


# ---- deidpipe approve --------------------------------------------------------------------------

@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A project folder with config.yaml, a sheet and verification reports of each status."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text(
        "group: demo\nproject: deid-demo\nsessions: sessions.tsv\n"
        "profile: PennBrainScienceCenter\nstaging: staging\nresults: results\n")
    (tmp_path / "sessions.tsv").write_text(
        "subject\tsession\tdicom_dir\tproject\n" + "".join(
            f"{subject}\tses-01\tdicom/{subject}\t\n"
            for subject in ("sub-001", "sub-002", "sub-003", "sub-004"))
        + "sub-005\tses-01\tdicom/sub-005\tother-project\n")
    for subject, status, project_label in (("sub-001", "pass", "deid-demo"),
                                           ("sub-002", "warn", "deid-demo"),
                                           ("sub-003", "fail", "deid-demo"),
                                           ("sub-005", "warn", "other-project")):
        write_report(tmp_path, subject, status, project_label)
    return tmp_path


def write_report(project: Path, subject: str, status: str, project_label: str = "deid-demo",
                 shown: dict[str, str] | None = None) -> Path:
    path = project / "results/verify/demo" / project_label / subject / "ses-01.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = {"group": "demo", "project": project_label, "subject": subject, "session": "ses-01"}
    report = {"session": {**labels, **(shown or {})}, "status": status,
              "findings": [{"check": "name_part", "severity": status}] * 2}
    path.write_text(json.dumps(report))
    return path


def approve(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["approve", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("subject, refusal", [
    ("sub-004", "demo/deid-demo/sub-004/ses-01 has not been verified (there is no "
                "results/verify/demo/deid-demo/sub-004/ses-01.json)"),
    ("sub-001", "demo/deid-demo/sub-001/ses-01 passed verification: there is nothing to "
                "approve"),
    ("sub-003", "demo/deid-demo/sub-003/ses-01 failed verification (2 finding(s)); a failed "
                "session cannot be approved"),
])
def test_approve_refuses_sessions_that_did_not_warn(project, capsys, subject, refusal):
    code, out, err = approve(capsys, subject, "ses-01", "--by", "Test Reviewer")
    assert code == 1 and out == ""
    assert err.startswith(f"error: {refusal}")
    assert "Traceback" not in err
    assert not (project / "approvals.tsv").exists()


def test_approve_appends_a_line_for_the_current_report(project, capsys):
    report = project / "results/verify/demo/deid-demo/sub-002/ses-01.json"
    sha = hashlib.sha256(report.read_bytes()).hexdigest()
    code, out, err = approve(capsys, "sub-002", "ses-01", "--by", "Test Reviewer")
    assert (code, err) == (0, "")
    sheet = project / "approvals.tsv"
    assert stat.S_IMODE(os.stat(sheet).st_mode) == 0o600
    header, written = sheet.read_text().splitlines()
    assert header.split("\t") == list(APPROVAL_COLUMNS)
    cells = written.split("\t")
    assert cells[:6] == ["demo", "deid-demo", "sub-002", "ses-01", "approve", "Test Reviewer"]
    assert cells[7] == sha and "T" in cells[6] and cells[6][-6] in "+-"
    lines = out.splitlines()
    assert lines[0].startswith("approved demo/deid-demo/sub-002/ses-01 as Test Reviewer on ")
    assert lines[0].endswith(f"(sha256 {sha[:12]}...): line 2 of approvals.tsv.")
    assert lines[-1] == "To upload it: snakemake --cores 4 --config upload=true"
    # A rejection is one more line; the message names the decision it replaces.
    code, out, _ = approve(capsys, "sub-002", "ses-01", "--by", "TR", "--reject")
    assert code == 0
    assert "line 3 of approvals.tsv" in out
    assert "replaces the earlier decision (line 2: approved by Test Reviewer on" in out
    assert "It will not be uploaded." in out
    assert [d.decision for d in read_approvals(sheet)] == ["approve", "reject"]


def test_approve_finds_the_project_of_the_sheet_row(project, capsys):
    code, out, _ = approve(capsys, "sub-005", "ses-01", "--by", "TR")
    assert code == 0 and out.startswith("approved demo/other-project/sub-005/ses-01 ")
    assert read_approvals(project / "approvals.tsv")[0].project == "other-project"


def test_approve_refuses_a_label_that_holds_an_identifier(project, capsys):
    write_report(project, "sub-002", "warn", shown={"subject": "(withheld: holds an identifier)"})
    code, out, err = approve(capsys, "sub-002", "ses-01", "--by", "TR")
    assert code == 1 and "cannot be approved" in err and "sub-002" not in err
    assert not (project / "approvals.tsv").exists()


def test_approve_checks_its_arguments(project, capsys):
    assert approve(capsys, "../etc", "ses-01", "--by", "TR")[2].startswith(
        "error: SUBJECT is not a valid label")
    assert approve(capsys, "sub-002", "ses-01", "--by", " ")[2].startswith("error: --by is empty")
    with pytest.raises(SystemExit):
        main(["approve", "sub-002", "ses-01"])  # --by is required
    assert "--by" in capsys.readouterr().err
    code, _, err = approve(capsys, "sub-002", "ses-01", "--by", "TR", "--config", "nope.yaml")
    assert code == 1 and "nope.yaml does not exist" in err
    assert not (project / "approvals.tsv").exists()
