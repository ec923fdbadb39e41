"""The run summary and report: one row per session in ``summary.tsv`` and one HTML page,
``report.html``, for a person to read; both rewritten at the end of every run."""

import html
import numbers
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from deidpipe import paths
from deidpipe.approvals import Decision, approve_command, read_approvals, review_of
from deidpipe.errors import PipelineError
from deidpipe.files import read_json, sha256_file, write_private_bytes
from deidpipe.findings import EXAMPLE_FILES, group_findings
from deidpipe.sheet import SessionRow
from deidpipe.verification.registry import WITHHELD

SUMMARY_COLUMNS = ["group", "project", "subject", "session", "files", "status", "uploaded",
                   "review"]
STATUS_ORDER = {"fail": 0, "not verified": 1, "warn": 2, "pass": 3}
REPORT_NAME = "report.html"


def session_paths(results: str | Path, session: SessionRow) -> dict[str, Path]:
    """Where a session's results live (deidpipe.paths, as the rules name them)."""
    return {"verify": Path(paths.verify_report(results, session.path)),
            "upload": Path(paths.upload_record(results, session.path))}


# Why an upload record says a session was not uploaded (its 'held' field), for the summary.
NOT_UPLOADED = {"waiting": "no (waiting for review)", "withheld": "no (waiting for review)",
                "stale": "no (waiting for review: the approval no longer applies)",
                "rejected": "no (rejected)"}


def _review(state: str, decision: Decision | None, session: SessionRow,
            shown: dict[str, str], upload_warned: bool,
            needs_place: bool) -> tuple[str, str, str]:
    """(state, summary cell, approve command) of a warned session's review; neither holds a
    withheld label (the command is empty then). States: approved, rejected, waiting, stale
    (the decision was for an earlier verification), not required (upload_warned is true)."""
    if state in ("approved", "rejected") and decision is not None:
        return state, decision.shown, ""
    if upload_warned:
        return "not required", "not required (upload_warned is true)", ""
    if WITHHELD in shown.values():
        return state, f"waiting: see sessions.tsv row {session.row}", ""
    place = (session.group, session.project) if needs_place else (None, None)
    command = approve_command(session.subject, session.session, *place)
    if state == "stale" and decision is not None:
        if decision.decision == "reject":
            return state, "rejection no longer applies (staged again): review again", command
        return state, "approval no longer applies (staged again): approve again", command
    return state, f"waiting: {command}", command


def _uploaded(record: dict[str, Any]) -> str:
    """The summary's uploaded cell for an upload record."""
    if record["uploaded"]:
        return "yes (earlier run)" if record.get("note") else "yes"
    if record.get("held") in NOT_UPLOADED:
        return NOT_UPLOADED[record["held"]]
    if str(record.get("reason", "")).startswith("held:"):
        return "no (held: verification warned)"  # a record of an older version
    return "no (blocked by verification)"


def summarise(sessions: list[SessionRow], results: str | Path, upload: bool, *,
              approvals: str | Path | None = None, upload_warned: bool = False) -> pd.DataFrame:
    """Read each session's reports (where they exist) and, for warned sessions, their
    decisions in the approvals sheet into the summary table. A sheet that cannot be read is
    named in ``table.attrs['approvals_error']``."""
    approvals_error = ""
    try:
        decisions = read_approvals(approvals)
    except PipelineError as error:
        decisions, approvals_error = [], str(error)
    # A subject and session label in two projects: the approve command needs the project too.
    pairs = Counter((session.subject, session.session) for session in sessions)
    rows = []
    for session in sessions:
        places = session_paths(results, session)
        files: int | str = ""
        status = "not verified"
        labels = {"subject": session.subject, "session": session.session}
        review, review_state, command = "", "", ""
        if places["verify"].exists():
            report = read_json(places["verify"])
            status = report["status"]
            files = report["files"]["staged"]
            labels = {key: report["session"][key] for key in labels}
            if status == "warn" and approvals_error:
                review, review_state = "not known: the approvals sheet has an error", "error"
            elif status == "warn":
                found = review_of(decisions, session.key, sha256_file(places["verify"]))
                review_state, review, command = _review(
                    found.state, found.decision, session, report["session"], upload_warned,
                    pairs[(session.subject, session.session)] > 1)
        if places["upload"].exists():
            uploaded = _uploaded(read_json(places["upload"]))
        elif not upload:
            uploaded = "no (upload is off)"
        elif status == "not verified":
            uploaded = "no"
        else:
            uploaded = "no (upload failed or not run; see the log)"
        rows.append({"row": session.row, "group": session.group, "project": session.project,
                     **labels, "files": files, "status": status, "uploaded": uploaded,
                     "review": review, "review_state": review_state, "command": command})
    table = pd.DataFrame(rows, columns=["row", *SUMMARY_COLUMNS, "review_state", "command"])
    table = table.sort_values(by="status", key=lambda column: column.map(STATUS_ORDER),
                              kind="stable")
    table.attrs["approvals_error"] = approvals_error
    return table


def _review_lines(table: pd.DataFrame, report_path: Path) -> list[str]:
    """The console's list of sessions that wait for a person, with the command to type."""
    waiting = [row for row in table.itertuples() if row.review_state in ("waiting", "stale")]
    if not waiting:
        return []
    lines = [f"{len(waiting)} warned session(s) wait for review before upload: read their "
             f"warnings in {report_path}, then approve each (or refuse it with --reject):"]
    for row in waiting:
        if not row.command:
            lines.append(f"  sessions.tsv row {row.row}: a label holds an identifier, so it "
                         "cannot be approved; give the session another label")
        elif row.review_state == "stale":
            lines.append(f"  {row.command}   (staged and verified again since the last "
                         "decision)")
        else:
            lines.append(f"  {row.command}")
    return lines


def write_summary(sessions: list[SessionRow], results: str | Path, upload: bool, *,
                  approvals: str | Path | None = None,
                  upload_warned: bool = False) -> list[str]:
    """Write ``{results}/summary.tsv`` and ``{results}/report.html``; return the closing lines
    for the console. ``approvals`` is the approvals sheet (None: no decision was made)."""
    summary_path = Path(results) / "summary.tsv"
    report_path = Path(results) / REPORT_NAME
    table = summarise(sessions, results, upload, approvals=approvals,
                      upload_warned=upload_warned)
    summary_text = table[SUMMARY_COLUMNS].to_csv(sep="\t", index=False)
    write_private_bytes(summary_path, summary_text.encode("utf-8"))
    page = render_report(sessions, table, results, datetime.now().astimezone())
    write_private_bytes(report_path, page.encode("utf-8"))
    counts = table["status"].value_counts()
    uploaded = int(table["uploaded"].str.startswith("yes").sum())
    lines = [
        f"{len(table)} session(s): {counts.get('pass', 0)} passed, {counts.get('warn', 0)} "
        f"warned, {counts.get('fail', 0)} failed verification, "
        f"{counts.get('not verified', 0)} not verified; {uploaded} uploaded.",
    ]
    for row in table.itertuples():
        if row.status == "pass":
            continue
        if WITHHELD in (row.subject, row.session):
            # Neither the label nor a path built from it goes to the console.
            lines.append(f"  {row.status}: sessions.tsv row {row.row} (a label holds an "
                         "identifier: give the session another label)")
            continue
        where = f"{row.group}/{row.project}/{row.subject}/{row.session}"
        detail = {"fail": f"see {Path(results) / 'verify' / where}.json",
                  "warn": f"look at its warnings in {report_path}",
                  }.get(row.status, f"see the logs in {Path(results) / 'logs'}")
        if row.review_state in ("approved", "rejected"):
            detail = row.review
        elif row.review_state == "stale":
            detail = f"{row.review}; its warnings are in {report_path}"
        lines.append(f"  {row.status}: {where} ({detail})")
    lines += _review_lines(table, report_path)
    if table.attrs.get("approvals_error"):
        lines.append("The review of warned sessions is not known: "
                     + table.attrs["approvals_error"])
    lines.append(f"Summary: {summary_path}")
    lines.append(f"Report: {report_path}")
    return lines


# ---- the HTML report -------------------------------------------------------------------------
#
# One self-contained page (inline CSS, no script, nothing fetched). Every value is escaped with
# html.escape where it is put into the page; the content security policy is a second guard:
# the page may not run a script or load anything even if a value slipped through unescaped.

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Arial, sans-serif; color: #111;
       line-height: 1.45; max-width: 80rem; margin: 1.5rem auto; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .3rem; }
h2 { font-size: 1.3rem; margin-top: 2rem; border-bottom: 2px solid #444; }
h3 { font-size: 1.05rem; margin-top: 1.2rem; }
p.explain { margin: .3rem 0 .6rem; max-width: 60rem; }
table { border-collapse: collapse; margin: .4rem 0 1rem; font-size: .92rem; }
th, td { border: 1px solid #888; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #e8e8e8; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
td.value { white-space: pre-wrap; font-family: ui-monospace, Consolas, monospace; }
td { overflow-wrap: anywhere; }
td.word { overflow-wrap: normal; }  /* names and tag paths: break between words only */
td.files { min-width: 22rem; }
table { max-width: 100%; }
dd { overflow-wrap: anywhere; }
dl.run { display: grid; grid-template-columns: max-content auto; gap: .15rem 1rem; }
dl.run dt { font-weight: bold; }
dl.run dd { margin: 0; font-family: ui-monospace, Consolas, monospace; }
.status { font-weight: bold; padding: 0 .35rem; border: 1px solid; border-radius: .2rem;
          white-space: nowrap; }
.status-fail { background: #fde0e0; color: #8b0000; }
.status-warn { background: #fff0c2; color: #5c3d00; }
.status-pass { background: #ddf3dd; color: #0b5a0b; }
.status-not-verified, .status-unknown { background: #eee; color: #333; }
.warning-box { border: 4px solid #b00000; background: #fde0e0; padding: .5rem 1rem;
               margin-top: 2rem; }
.warning-box h2 { border-bottom-color: #b00000; color: #8b0000; margin-top: .5rem; }
footer { margin-top: 2.5rem; font-size: .85rem; color: #444; }
@media print {
  body { max-width: none; margin: 0; font-size: 10pt; }
  a { color: inherit; }
  thead { display: table-header-group; }
  tr { break-inside: avoid; }
  .status, .warning-box { print-color-adjust: exact; -webkit-print-color-adjust: exact; }
}
"""
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'"
STATUS_CLASS = {"fail": "fail", "warn": "warn", "pass": "pass", "not verified": "not-verified"}
FINDING_SEVERITY_ORDER = {"fail": 0, "warn": 1}


class SafeHtml(str):
    """Markup built in this module from escaped parts; put into the page as it is."""


class _Cell:
    """A cell with a CSS class (see STYLE) of its own."""

    css = ""

    def __init__(self, text: str, css: str = "") -> None:
        self.text = text
        self.css = css or self.css


class _Value(_Cell):
    """A free-text value: shown in a monospace cell that keeps its spaces and line breaks."""

    css = "value"


def _escape(value: object) -> str:
    return value if isinstance(value, SafeHtml) else html.escape(str(value))


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Number) and not isinstance(value, bool)


def _status_badge(status: str) -> SafeHtml:
    """The status as a word (colour only helps)."""
    css = STATUS_CLASS.get(status, "unknown")
    return SafeHtml(f'<span class="status status-{css}">{html.escape(status)}</span>')


def _table(headers: list[str], rows: Iterable[list[object]]) -> str:
    head = "".join(f'<th scope="col">{_escape(header)}</th>' for header in headers)
    body = []
    for cells in rows:
        row_html = []
        for cell in cells:
            css = ' class="number"' if _is_number(cell) else ""
            if isinstance(cell, _Cell):
                css, cell = f' class="{html.escape(cell.css)}"', cell.text
            row_html.append(f"<td{css}>{_escape(cell)}</td>")
        body.append(f"<tr>{''.join(row_html)}</tr>")
    return (f"<table><thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body)
            + "\n</tbody></table>")


def _section(section_id: str, title: str, explanation: str, body: str,
             css_class: str = "") -> str:
    class_attribute = f' class="{css_class}"' if css_class else ""
    return (f'<section id="{section_id}"{class_attribute}>\n<h2>{_escape(title)}</h2>\n'
            f'<p class="explain">{_escape(explanation)}</p>\n{body}\n</section>')


def _sentence(text: str) -> str:
    return f"<p>{_escape(text)}</p>"


class _Batch:
    """The sessions in summary order with their verification reports (None: not verified)."""

    def __init__(self, sessions: list[SessionRow], table: pd.DataFrame,
                 results: str | Path) -> None:
        by_row = {session.row: session for session in sessions}
        self.rows = [row._asdict() for row in table.itertuples(index=False)]
        self.sessions = [by_row[row["row"]] for row in self.rows]
        self.reports: list[dict[str, Any] | None] = []
        for session in self.sessions:
            verify_path = session_paths(results, session)["verify"]
            self.reports.append(read_json(verify_path) if verify_path.exists() else None)

    def verified(self) -> list[tuple[str, dict[str, Any]]]:
        """(shown session name, report) of each verified session, in summary order."""
        return [(self.name(index), report) for index, report in enumerate(self.reports)
                if report is not None]

    def name(self, index: int) -> str:
        """group/project/subject/session as the summary shows it (withheld labels stay so)."""
        row = self.rows[index]
        return f"{row['group']}/{row['project']}/{row['subject']}/{row['session']}"

    def withheld(self, index: int) -> bool:
        row = self.rows[index]
        report = self.reports[index] or {}
        return WITHHELD in (row["subject"], row["session"],
                            *report.get("session", {}).values())

    def older_reports_note(self, key: str) -> str:
        """A sentence when some reports predate ``key`` (so 'nothing' might mean 'not looked')."""
        missing = sum(key not in report for _name, report in self.verified())
        if not missing:
            return ""
        return _sentence(f"{missing} session(s) have a verification report from an older "
                         "version without this information; run them again to see it.")


def _run_header(batch: _Batch, results: str | Path, generated_at: datetime) -> str:
    run_time = f"{generated_at:%Y-%m-%d %H:%M} {generated_at:%Z}".strip()
    profiles = sorted({(str(profile.get("file", "")), str(profile.get("version", "")),
                        str(profile.get("sha256", "")))
                       for _name, report in batch.verified()
                       for profile in [report.get("profile") or {}]})
    engines = sorted({str(report["engine"]) for _name, report in batch.verified()
                      if report.get("engine")})
    items = [("Run ended", run_time), ("Results folder", str(results))]
    if not profiles:
        items.append(("Profile", "not known: no session was verified"))
    for number, (file, version, sha256) in enumerate(profiles, start=1):
        label = "Profile" if len(profiles) == 1 else f"Profile {number} of {len(profiles)}"
        items += [(label, file), ("Version", version), ("sha256", sha256)]
    items += [("Engine", engine) for engine in engines]
    details = "".join(f"<dt>{_escape(term)}</dt><dd>{_escape(value)}</dd>"
                      for term, value in items)
    different = (_sentence("The sessions were verified with different profiles (each is listed "
                           "above); check that this is intended.") if len(profiles) > 1 else "")
    return (f'<header id="run">\n<h1>De-identification report: run of {_escape(run_time)}</h1>'
            f'\n<dl class="run">{details}</dl>\n{different}\n</header>')


def _counts_section(batch: _Batch) -> str:
    statuses = [row["status"] for row in batch.rows]
    uploaded = sum(str(row["uploaded"]).startswith("yes") for row in batch.rows)
    counts = [statuses.count("pass"), statuses.count("warn"), statuses.count("fail"),
              statuses.count("not verified"), uploaded, len(batch.rows)]
    table = _table(["Passed", "Warned", "Failed", "Not verified", "Uploaded", "Sessions"],
                   [counts])
    return _section("counts", "Counts", "How the sessions of sessions.tsv came out in this run. "
                    "Every session that is not 'pass' needs a look: see below.", table)


def _sessions_section(batch: _Batch, results: str | Path) -> str:
    rows = []
    for index, row in enumerate(batch.rows):
        session = batch.sessions[index]
        if batch.reports[index] is None:
            link: object = "none (not verified)"
        elif batch.withheld(index):
            # The report's file name is the label that holds an identifier: no link, no path.
            link = "not linked (its file name holds an identifier)"
        else:
            relative = session_paths(results, session)["verify"].relative_to(Path(results))
            href = "/".join(quote(part) for part in relative.parts)
            link = SafeHtml(f'<a href="{html.escape(href)}">{html.escape(relative.name)}</a>')
        files = row["files"] if row["files"] != "" else "not known"
        rows.append([row["row"], row["group"], row["project"], row["subject"], row["session"],
                     files, _status_badge(str(row["status"])), row["uploaded"], row["review"],
                     link, _review_page_link(batch.reports[index], results)])
    explanation = "Most urgent first. What each status means and what to do:"
    meanings = [
        ("fail", "not uploaded. Read its findings below, fix the source or the profile, then "
                 "run again."),
        ("not verified", "the run stopped before this session was checked. See the logs in "
                         f"{Path(results) / 'logs'}, then run again."),
        ("warn", "a person must look at its warnings below before the data are shared. "
                 "Unless upload_warned is true, it is uploaded only after the reviewer has "
                 "approved it (deidpipe approve SUBJECT SESSION --by NAME; --reject refuses "
                 "it); the Review column says where it stands. An approval holds for the "
                 "verification it was given for: a session staged and verified again needs a "
                 "new one."),
        ("pass", "every check passed. Still read the free text below."),
    ]
    legend = "".join(f"<li>{_status_badge(status)} {_escape(meaning)}</li>"
                     for status, meaning in meanings)
    legend += ("<li>A label shown as withheld holds an identifier: give that row of "
               "sessions.tsv another label.</li>")
    legend += ("<li>Images: the session's review page, beside its staged copy in staging "
               "(private: it shows the images as they will be uploaded): the images in which "
               "OCR read text, those at risk of burned-in text, and one per series.</li>")
    table = _table(["Row in sessions.tsv", "Group", "Project", "Subject", "Session", "Files",
                    "Status", "Uploaded", "Review", "Verification report", "Images"], rows)
    return _section("sessions", "Sessions", explanation, f"<ul>{legend}</ul>\n{table}")


def _review_page_link(report: dict[str, Any] | None, results: str | Path) -> object:
    """A link to the session's review page (in staging), relative to this page's folder."""
    page = (report or {}).get("review_page")
    if not page:
        return "none (OCR is off or the session was not verified)"
    if page == WITHHELD:
        return "not linked (its path holds an identifier)"
    relative = Path(os.path.relpath(Path(page).resolve(), Path(results).resolve()))
    href = "/".join(quote(part) for part in relative.parts)
    return SafeHtml(f'<a href="{html.escape(href)}">review page</a>')


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _example_files(group: dict[str, Any]) -> object:
    """Up to three file names, one a line, then how many more; or that it is the session."""
    examples = [str(file) for file in group.get("examples") or []]
    files = int(group.get("files") or 0)
    if not files:
        return "none: about the whole session"
    lines = examples[:EXAMPLE_FILES]
    if files > len(lines):
        lines.append(f"and {files - len(lines)} more")
    return _Value("\n".join(lines), css="value files")


def _findings_section(batch: _Batch) -> str:
    parts = []
    for index, report in enumerate(batch.reports):
        report = report or {}
        findings = report.get("findings") or []
        # Reports from before the groups: grouped here, the same way verification does.
        groups = (report["finding_groups"] if "finding_groups" in report
                  else group_findings(findings)) or []
        if not findings and not groups:
            continue
        groups = sorted(groups, key=lambda group: FINDING_SEVERITY_ORDER.get(
            group.get("severity", ""), 2))
        rows = [[_status_badge(str(group.get("severity", ""))),
                 *(_Cell(str(group.get(key, "")), css="word")
                   for key in ("check", "tag", "source_attribute")),
                 int(group.get("files") or 0), _example_files(group), group.get("message", "")]
                for group in groups]
        status = str(batch.rows[index]["status"])
        parts.append(f'<h3 id="findings-row-{batch.rows[index]["row"]}">'
                     f'{_escape(batch.name(index))} (sessions.tsv row '
                     f'{_escape(batch.rows[index]["row"])}): {_status_badge(status)}, '
                     f'{_plural(len(findings), "finding")} in {_plural(len(groups), "group")}'
                     '</h3>\n'
                     + _table(["Severity", "Check", "Place (tag path)", "Source attribute",
                               "Files", "Example files", "Message"], rows))
    body = "\n".join(parts) or _sentence("No session has findings.")
    explanation = (
        "What the checks found, per session; values are never shown, only where they are. "
        "Findings of the same kind (same check, place, source attribute and message) are one "
        "row, with the number of files and a few of them as examples; the session's "
        "verification report (see Sessions above) lists every file. "
        "fail: fix the source or the profile, then run again. warn: look at the files named "
        "and decide whether they may be shared; if not, fix the source or the profile and run "
        "again.")
    return _section("findings", "Findings", explanation, body)


def _free_text_section(batch: _Batch) -> str:
    # (attribute, tag, value) -> [files, sessions], summed over the batch.
    totals: defaultdict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    withheld = 0
    for _name, report in batch.verified():
        for entry in report.get("free_text") or []:
            key = (str(entry.get("attribute", "")), str(entry.get("tag", "")),
                   str(entry.get("value", "")))
            totals[key][0] += int(entry.get("files", 0))
            totals[key][1] += 1
        withheld += int(report.get("free_text_withheld") or 0)
    ordered = sorted(totals.items(), key=lambda item: (item[0][0], item[0][2], item[0][1]))
    rows = [[attribute, tag, _Value(value), files, sessions]
            for (attribute, tag, value), (files, sessions) in ordered]
    body = (_table(["Attribute", "Tag", "Value", "Files", "Sessions"], rows) if rows
            else _sentence("No free-text values remain."))
    withheld_note = (
        f"{withheld} value(s) are not shown because they hold an identifier; these are listed "
        "as findings instead (see Findings above)." if withheld else
        "No value was held back for holding an identifier.")
    explanation = (
        "Descriptions and comments left in the de-identified files, where people type freely. "
        "Read every value; if one holds a name, ID or date of birth, add the attribute to the "
        "profile (remove.csv or empty.csv) and run again.")
    return _section("free-text", "Free text to review", explanation,
                    body + "\n" + _sentence(withheld_note)
                    + batch.older_reports_note("free_text"))


def _private_tags_section(batch: _Batch) -> str:
    review_rows: list[list[object]] = []
    creator_rows: list[list[object]] = []
    policies: set[str] = set()
    knowledge_bases: set[str] = set()
    counted = {"known_safe": 0, "no_text": 0, "to_review": 0, "elements": 0}
    for name, report in batch.verified():
        private_tags = report.get("private_tags") or {}
        if "policy" in private_tags:
            policies.add(str(private_tags["policy"]))
        base = private_tags.get("knowledge_base") or {}
        if base:
            knowledge_bases.add(f"{base.get('name', '')} ({base.get('version', '')}, "
                                f"{base.get('rows', '')} elements)")
        for key in counted:
            counted[key] += int(private_tags.get(key) or 0)
        for entry in private_tags.get("review") or []:
            values = [f"{value.get('value', '')}   ({value.get('files', 0)} file(s))"
                      for value in entry.get("values") or []]
            if entry.get("more_values"):
                values.append(f"… and {entry['more_values']} more distinct value(s)")
            if entry.get("values_withheld"):
                values.append(f"(the values in {entry['values_withheld']} file(s) are not "
                              "shown: they hold an identifier, see Findings)")
            review_rows.append([name, entry.get("creator", ""), entry.get("element", ""),
                                entry.get("name", "") or "(unknown)", entry.get("vr", ""),
                                entry.get("knowledge_base", ""), entry.get("files", 0),
                                _Value("\n".join(values))])
        creator_rows += [[name, creator.get("creator", ""), creator.get("group", ""),
                          creator.get("elements", 0), creator.get("files", "")]
                         for creator in private_tags.get("creators") or []]
    if review_rows:
        body = ("<h3>Private elements to read</h3>\n"
                + _table(["Session", "Private creator", "Element", "Name", "VR",
                          "Knowledge base", "Files", "Distinct values"], review_rows))
    elif creator_rows:
        body = _sentence("No private element needs reading: every one is known to be safe or "
                         "holds no text.")
    else:
        body = _sentence("No private tags remain.")
    if creator_rows:
        body += ("\n<h3>All private creators</h3>\n"
                 + _table(["Session", "Private creator", "Group", "Elements", "Files"],
                          creator_rows))
    policy = ", ".join(sorted(policies)) or "not known"
    knowledge_base = "; ".join(sorted(knowledge_bases)) or "not recorded in these reports"
    explanation = (
        "Private tags are vendor-specific elements that the profile leaves untouched, so they "
        "may hold anything. Each is judged against the knowledge base of The Cancer Imaging "
        f"Archive's curators ({knowledge_base}): of {counted['elements']} private element(s), "
        f"{counted['known_safe']} are known to be safe and {counted['no_text']} hold no text "
        f"(numbers, binary data). The {counted['to_review']} that hold text and are not known "
        "to be safe are listed below with their distinct values: read them; if one holds a "
        "name, ID or date, have the profile remove private tags (or that element) and run "
        f"again. Policy for private tags in this run: {policy} (keep: listed without a "
        "warning; warn: the session warns; fail: the session fails).")
    return _section("private-tags", "Private tags", explanation,
                    body + batch.older_reports_note("private_tags"))


def _burned_in_section(batch: _Batch) -> str:
    rows = [[name, flag.get("file", ""), flag.get("reason", ""),
             _status_badge(str(flag.get("severity", "")))]
            for name, report in batch.verified() for flag in report.get("burned_in") or []]
    body = (_table(["Session", "File", "Reason", "Severity"], rows) if rows
            else _sentence("No image was flagged for possible burned-in text."))
    explanation = (
        "Images that may show text (a name, a date) in the picture itself, which no profile "
        "can remove. Open each one and look; if text is burned in, leave that series out or "
        "have it redacted before the data are shared.")
    return _section("burned-in", "Possible burned-in text", explanation,
                    body + batch.older_reports_note("burned_in"))


def _attribute_totals(batch: _Batch, key: str) -> dict[tuple[str, str, str], tuple[int, int]]:
    """(attribute, tag, action) -> (sessions, files) over the batch, for a per-attribute list
    of the reports ('basic_profile_audit' or 'changes'), sorted."""
    totals: defaultdict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for _name, report in batch.verified():
        for entry in report.get(key) or []:
            counted = totals[(str(entry.get("attribute", "")), str(entry.get("tag", "")),
                              str(entry.get("action", "")))]
            counted[0] += 1
            counted[1] += int(entry.get("files", 0))
    return {attribute: (sessions, files)
            for attribute, (sessions, files) in sorted(totals.items())}


def _basic_profile_section(batch: _Batch) -> str:
    rows = [[attribute, tag, action, sessions, files] for (attribute, tag, action), (
        sessions, files) in _attribute_totals(batch, "basic_profile_audit").items()]
    body = (_table(["Attribute", "Tag", "Standard action", "Sessions", "Files"], rows) if rows
            else _sentence("No attribute of the Basic Profile remains populated."))
    explanation = (
        "Attributes that the DICOM standard's Basic Application Level Confidentiality Profile "
        "(PS3.15 Annex E) would remove or blank but that are still populated after staging, "
        "with the action the standard gives (D: dummy value, Z: empty or dummy value, "
        "X: remove, U: new UID; combinations such as X/Z allow either). This is "
        "informational and never fails a session: it shows where the profile keeps more than "
        "the standard; check that each one is meant to be kept.")
    return _section("basic-profile-audit", "DICOM Basic Profile audit", explanation,
                    body + batch.older_reports_note("basic_profile_audit"))


def _changes_section(batch: _Batch) -> str:
    rows = [[attribute, tag, action, files] for (attribute, tag, action), (
        _sessions, files) in _attribute_totals(batch, "changes").items()]
    body = (_table(["Attribute", "Tag", "Action", "Files"], rows) if rows
            else _sentence("No attribute was changed."))
    explanation = (
        "What staging did to the files, summed over all sessions. Check that it matches what "
        "the profile is meant to do; an attribute you expected here but do not see was left "
        "as it was.")
    return _section("changes", "What changed", explanation,
                    body + batch.older_reports_note("changes"))


def _checks_section(batch: _Batch) -> str:
    """Each check with the severities it ran at in this run and what it looks for."""
    severities: defaultdict[str, set[str]] = defaultdict(set)
    looks_for: dict[str, str] = {}
    for _name, report in batch.verified():
        for check, entry in (report.get("checks") or {}).items():
            severities[check].add(str(entry.get("severity") or entry.get("default_severity")
                                      or ""))
            looks_for.setdefault(check, str(entry.get("looks_for", "")))
    rows = [[check, ", ".join(sorted(severities[check])), looks_for[check]]
            for check in severities]
    body = (_table(["Check", "Severity", "What it looks for"], rows) if rows
            else _sentence("No session was verified in this run."))
    explanation = ("What verification looked at. fail: a finding stops the upload; warn: "
                   "reported for a person to judge; off: not run. Severities are set in "
                   "config.yaml under 'checks'.")
    return _section("checks", "Checks", explanation, body)


def _phi_log_section(batch: _Batch) -> str:
    logs = sorted({str(report["phi_log"]) for _name, report in batch.verified()
                   if report.get("phi_log")})
    if not logs:
        return ""
    items = "".join(f"<li>{_escape(path)}</li>" for path in logs)
    explanation = (
        "The PHI log holds patient identifiers: the values before and after de-identification. "
        "Keep it private, never upload or share it, and delete it when the audit is done. "
        "It is here:")
    return _section("phi-log", "Warning: the PHI log holds identifiers", explanation,
                    f"<ul>{items}</ul>", css_class="warning-box")


def render_report(sessions: list[SessionRow], table: pd.DataFrame, results: str | Path,
                  generated_at: datetime) -> str:
    """The HTML page for ``table`` (from ``summarise``), reading the verification reports."""
    batch = _Batch(sessions, table, results)
    # The PHI log warning comes first: it is the one thing nobody may overlook.
    sections = [
        _phi_log_section(batch), _counts_section(batch), _sessions_section(batch, results),
        _findings_section(batch),
        _free_text_section(batch), _private_tags_section(batch), _burned_in_section(batch),
        _basic_profile_section(batch), _changes_section(batch), _checks_section(batch),
    ]
    footer = ("Written by deidpipe at the end of the run. This page holds no identifier "
              "values, except any left in the free-text values shown for review.")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>De-identification report: run of {_escape(f'{generated_at:%Y-%m-%d %H:%M}')}"
        f"</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + _run_header(batch, results, generated_at) + "\n<main>\n"
        + "\n".join(section for section in sections if section)
        + f"\n</main>\n<footer><p>{_escape(footer)}</p></footer>\n</body>\n</html>\n")
