"""The command lines measured: ``cp -r``, reading every file once, the pipeline's own command
line (``python -m deidpipe stage/verify/profile``, ``snakemake``) and loading a session sheet.

The pipeline is driven only through its command line, as its rules and its users run it, so
that the benchmark keeps working while its internals change.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from deidbench.processes import Measurement, measure
from deidbench.trees import Trash

BENCH = Path(__file__).resolve().parent.parent
REPO = BENCH.parent
SNAKEFILE = REPO / "Snakefile"
BARE_SNAKEFILE = BENCH / "bare" / "Snakefile"
PROFILE_NAME = "PennBrainScienceCenter"

# Verification settings (the verify job's --settings) with the two OCR checks off: what OCR
# costs is the difference from the default settings, under which it runs.
OCR_OFF = json.dumps({"checks": {"burned_in_text": "off", "burned_in_text_review": "off"}})
DEFAULT_SETTINGS = "{}"

Command = list[str | Path]

# Reads every file below the folders given, whole, once (the least any pipeline must do).
_READ_ONCE = """
import os, sys
total = 0
for root in sys.argv[1:]:
    for folder, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(folder, name), "rb", buffering=0) as handle:
                while chunk := handle.read(1 << 20):
                    total += len(chunk)
print(total)
"""


def copy_command(source: Path, target: Path) -> Command:
    return ["cp", "-r", source, target]


def read_once_command(*folders: Path) -> Command:
    """A Python loop that reads every file's bytes below ``folders`` once."""
    return [sys.executable, "-c", _READ_ONCE, *folders]


def deidpipe(*arguments: str | Path) -> Command:
    return [sys.executable, "-m", "deidpipe", *arguments]


def profile_yaml_command(output: Path) -> Command:
    """Generate the site profile's YAML, as the pipeline's profile rule does."""
    return deidpipe("profile", REPO / "profiles" / PROFILE_NAME, output)


def verify_has_threads() -> bool:
    result = subprocess.run(deidpipe("verify", "--help"), capture_output=True, text=True,
                            check=True)
    return "--threads" in result.stdout


def stage_command(session: Path, profile: Path, out: Path, threads: int) -> Command:
    """Stage one session into ``out/<session name>``, its manifest beside it."""
    return deidpipe("stage", "--dicom-dir", session, "--profile", profile,
                    "--staged-dir", out / session.name, "--manifest",
                    out / f"{session.name}.manifest.json", "--threads", str(threads))


def verify_command(session: Path, profile: Path, staged: Path, reports: Path, threads: int,
                   with_threads: bool, settings: str = DEFAULT_SETTINGS) -> Command:
    """Verify one session staged by ``stage_command`` into ``staged``; report into
    ``reports``. ``with_threads``: the verify command takes ``--threads``."""
    command = deidpipe("verify", "--dicom-dir", session, "--staged-dir", staged / session.name,
                       "--manifest", staged / f"{session.name}.manifest.json",
                       "--profile", profile, "--report", reports / f"{session.name}.json",
                       "--group", "bench", "--project", "deid-bench",
                       "--subject", subject_of(session), "--session", "ses-01",
                       "--settings", settings)
    return [*command, "--threads", str(threads)] if with_threads else command


def subject_of(session: Path) -> str:
    return session.name.split("_")[0]


def report_statuses(reports: Path) -> dict[str, int]:
    """How many verification reports in ``reports`` have each status."""
    statuses: dict[str, int] = {}
    for report in sorted(reports.glob("*.json")):
        status = json.loads(report.read_text())["status"]
        statuses[status] = statuses.get(status, 0) + 1
    return statuses


def write_project(folder: Path, sessions: list[Path], trash: Trash) -> None:
    """A pipeline project folder (config.yaml, sessions.tsv) for ``snakemake -s SNAKEFILE``."""
    trash.discard(folder)
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(
        "group: bench\nproject: deid-bench\nsessions: sessions.tsv\n"
        f"profile: {PROFILE_NAME}\nstaging: staging\nresults: results\nupload: false\n")
    with open(folder / "sessions.tsv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["subject", "session", "dicom_dir"])
        for session in sessions:
            writer.writerow([subject_of(session), "ses-01", str(session)])


def run_pipeline(folder: Path, log: Path, trash: Trash, dry_run: bool = False,
                 snakefile: Path = SNAKEFILE, profiler: Path | None = None,
                 extra: Sequence[str] = ()) -> Measurement:
    """``snakemake --cores 2`` in ``folder`` (upload off), from a clean state (no staging,
    results or .snakemake); ``-n`` for a dry run, under pyinstrument when ``profiler`` names a
    file; ``extra``: more Snakemake options."""
    for leftover in ("staging", "results", ".snakemake"):
        trash.discard(folder / leftover)
    command: Command = [sys.executable]
    if profiler:
        command += ["-m", "pyinstrument", "-r", "pyisession", "-o", profiler]
    command += ["-m", "snakemake", "-s", snakefile, "--cores", "2"]
    command += ["-n"] if dry_run else ["--config", "upload=false"]
    command += list(extra)
    return measure(command, cwd=folder, log=log)


def pipeline_statuses(folder: Path) -> dict[str, int]:
    """How many sessions of the pipeline's results/summary.tsv have each status."""
    with open(folder / "results" / "summary.tsv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts


# Times deidpipe.sheet.load_sheet on a sheet, as the pipeline's Snakefile calls it (the
# sheet, the default group and project, the DICOM folders checked, the staging and results
# settings when the function takes them); prints the seconds and the rows as JSON.
_LOAD_SHEET = """
import inspect, json, sys, time
started = time.perf_counter()
from deidpipe.sheet import load_sheet
imported = time.perf_counter()
options = {"check_paths": True, "staging": "staging", "results": "results"}
accepted = inspect.signature(load_sheet).parameters
options = {key: value for key, value in options.items() if key in accepted}
rows = load_sheet(sys.argv[1], "bench", "deid-bench", **options)
loaded = time.perf_counter()
print(json.dumps({"rows": len(rows), "import_seconds": imported - started,
                  "load_seconds": loaded - imported}))
"""


def load_sheet_command(sheet: Path) -> Command:
    return [sys.executable, "-c", _LOAD_SHEET, sheet]
