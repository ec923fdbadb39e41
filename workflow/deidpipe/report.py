"""The run summary: one row per session, rewritten at the end of every run."""

from pathlib import Path

import pandas as pd

from deidpipe.files import read_json, write_private_bytes
from deidpipe.sheet import SessionRow
from deidpipe.verify import WITHHELD

SUMMARY_COLUMNS = ["group", "project", "subject", "session", "files", "status", "uploaded"]
STATUS_ORDER = {"fail": 0, "not verified": 1, "warn": 2, "pass": 3}


def session_paths(results: str | Path, session: SessionRow) -> dict[str, Path]:
    """Where a session's results live (the names the rules use)."""
    results = Path(results)
    return {
        "verify": results / "verify" / f"{session.path}.json",
        "upload": results / "upload" / f"{session.path}.json",
    }


def summarise(sessions: list[SessionRow], results: str | Path, upload: bool) -> pd.DataFrame:
    """Read each session's reports (where they exist) into the summary table."""
    rows = []
    for session in sessions:
        paths = session_paths(results, session)
        files: int | str = ""
        status = "not verified"
        labels = {"subject": session.subject, "session": session.session}
        if paths["verify"].exists():
            report = read_json(paths["verify"])
            status = report["status"]
            files = report["files"]["staged"]
            labels = {key: report["session"][key] for key in labels}
        if paths["upload"].exists():
            record = read_json(paths["upload"])
            uploaded = "yes" if record["uploaded"] else "no (blocked by verification)"
            if record.get("note"):
                uploaded = "yes (earlier run)"
        elif not upload:
            uploaded = "no (upload is off)"
        elif status == "not verified":
            uploaded = "no"
        else:
            uploaded = "no (upload failed or not run; see the log)"
        rows.append({"row": session.row, "group": session.group, "project": session.project,
                     **labels, "files": files, "status": status, "uploaded": uploaded})
    table = pd.DataFrame(rows, columns=["row", *SUMMARY_COLUMNS])
    return table.sort_values(by="status", key=lambda column: column.map(STATUS_ORDER),
                             kind="stable")


def write_summary(sessions: list[SessionRow], results: str | Path, upload: bool) -> list[str]:
    """Write ``{results}/summary.tsv``; return the closing lines for the console."""
    summary_path = Path(results) / "summary.tsv"
    table = summarise(sessions, results, upload)
    summary_text = table[SUMMARY_COLUMNS].to_csv(sep="\t", index=False)
    write_private_bytes(summary_path, summary_text.encode("utf-8"))
    counts = table["status"].value_counts()
    uploaded = int(table["uploaded"].str.startswith("yes").sum())
    lines = [
        f"{len(table)} session(s): {counts.get('pass', 0)} passed, {counts.get('warn', 0)} "
        f"warned, {counts.get('fail', 0)} failed verification, "
        f"{counts.get('not verified', 0)} not verified; {uploaded} uploaded.",
    ]
    for row in table.itertuples():
        if row.status not in ("fail", "not verified"):
            continue
        if WITHHELD in (row.subject, row.session):
            # Neither the label nor a path built from it goes to the console.
            lines.append(f"  fail: sessions.tsv row {row.row} (a label holds an identifier: "
                         "give the session another label)")
            continue
        where = f"{row.group}/{row.project}/{row.subject}/{row.session}"
        detail = (f"see {Path(results) / 'verify' / where}.json" if row.status == "fail"
                  else f"see the logs in {Path(results) / 'logs'}")
        lines.append(f"  {row.status}: {where} ({detail})")
    lines.append(f"Summary: {summary_path}")
    return lines
