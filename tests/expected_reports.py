"""Reports compared byte for byte with the ones recorded before a change to verification:
a change meant to make it faster (or to move code) must not change what it reports.

Run the tests with DEIDPIPE_RECORD_REPORTS=1 to record the reports anew, after a change meant
to alter them; review the difference (git diff tests/data/expected_reports) before committing.
"""

import os
import re
from pathlib import Path

EXPECTED = Path(__file__).resolve().parent / "data" / "expected_reports"
RECORD = os.environ.get("DEIDPIPE_RECORD_REPORTS") == "1"


def assert_report_unchanged(corpus: str, case: str, report_path: Path, folder: Path) -> None:
    """The report at ``report_path`` (its temporary ``folder`` written as <tmp>) is the one
    recorded for ``case`` of ``corpus``."""
    text = report_path.read_text(encoding="utf-8").replace(str(folder), "<tmp>")
    expected = EXPECTED / corpus / (re.sub(r"[^A-Za-z0-9]+", "-", case).strip("-") + ".json")
    if RECORD:
        expected.parent.mkdir(parents=True, exist_ok=True)
        expected.write_text(text, encoding="utf-8")
        return
    assert expected.is_file(), f"no report recorded for {corpus}/{case}: {expected}"
    assert text == expected.read_text(encoding="utf-8"), (
        f"the report of {corpus}/{case} differs from the one recorded in {expected}")
