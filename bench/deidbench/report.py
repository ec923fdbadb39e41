"""What a run found, and the markdown it is written out as (bench/RESULTS.md)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from deidbench.processes import MB, Measurement


@dataclass
class Row:
    """One measured command (or commands run one after another) over a tree."""

    name: str
    files: int
    mb: float
    measured: Measurement
    note: str = ""

    @property
    def files_per_second(self) -> float:
        return self.files / self.measured.wall

    @property
    def mb_per_second(self) -> float:
        return self.mb / self.measured.wall

    @property
    def cpu_ms_per_file(self) -> float:
        return 1000 * self.measured.cpu / self.files


@dataclass
class Target:
    name: str
    goal: str
    measured: str
    met: bool | None  # None: reported, no pass/fail
    detail: str = ""  # how far it is met, or what it is short by
    why: str = ""  # for an unmet target: why it falls short


@dataclass
class Results:
    command: str
    started: dt.datetime
    machine: list[tuple[str, str]] = field(default_factory=list)
    load_before: str = ""
    load_after: str = ""
    code: str = ""
    trees: list[tuple[str, str, str, str]] = field(default_factory=list)
    series: list[str] = field(default_factory=list)
    throughput: list[Row] = field(default_factory=list)
    limit: list[tuple[str, str]] = field(default_factory=list)
    ocr: list[tuple[str, str]] = field(default_factory=list)
    jobs: list[Row] = field(default_factory=list)
    fixed: list[tuple[str, str]] = field(default_factory=list)
    planning: list[tuple[str, str]] = field(default_factory=list)
    sheet_load: list[tuple[str, str]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    profiles: list[tuple[str, str]] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # sections that failed, and why
    total_seconds: float = 0.0


def ratio_text(value: float, reference: float | None) -> str:
    return f"{value / reference:.2f}×" if reference else "–"


def mb_text(size: int) -> str:
    return f"{size / MB:.0f}" if size else "–"


def number(value: float) -> str:
    """A figure to three significant digits or so, with thousands separated."""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def short_by(value: float, target: float, higher_is_better: bool = True) -> tuple[bool, str]:
    """Whether ``value`` meets ``target``, and by how much it is met or falls short."""
    if higher_is_better:
        if value >= target:
            return True, f"{value / target:.2f}× the target"
        return False, f"short by {target / value:.2f}×" if value else "nothing measured"
    if value <= target:
        return True, f"{value / target:.0%} of the limit"
    return False, f"short by {value / target:.2f}× (over the limit)"


def _key_values(rows: list[tuple[str, str]]) -> list[str]:
    return ["| | |", "| --- | --- |", *[f"| {key} | {value} |" for key, value in rows]]


def _throughput_table(results: Results) -> list[str]:
    rows = results.throughput
    cp = next((row for row in rows if row.name.startswith("`cp -r`")), None)
    read = next((row for row in rows if row.name.startswith("reading every")), None)
    fwmig = next((row for row in rows if "flywheel-migration" in row.name), None)

    def versus(row: Row, reference: Row | None) -> str:
        return ratio_text(row.files_per_second, reference.files_per_second if reference else None)

    lines = [
        "| what | files | MB | seconds | files/s | MB/s | CPU ms per file | peak RSS (MB) "
        "| CPU (cores) | others' CPU (cores) | vs `cp -r` | vs reading once "
        "| vs flywheel-migration |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} | {row.files} | {row.mb:.0f} | {row.measured.wall:.2f} | "
            f"{number(row.files_per_second)} | {number(row.mb_per_second)} | "
            f"{number(row.cpu_ms_per_file)} | {mb_text(row.measured.peak_rss)} | "
            f"{row.measured.cores:.2f} | {row.measured.others_cores:.2f} | {versus(row, cp)} | "
            f"{versus(row, read)} | {versus(row, fwmig)} |")
    return lines


def _jobs_table(rows: list[Row]) -> list[str]:
    lines = [
        "| job | files | MB | seconds | files/s | peak RSS, tree (MB) | peak PSS, tree (MB) "
        "| peak RSS, one process (MB) | processes | CPU (cores) | others' CPU (cores) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} | {row.files} | {row.mb:.0f} | {row.measured.wall:.2f} | "
            f"{number(row.files_per_second)} | {mb_text(row.measured.peak_rss)} | "
            f"{mb_text(row.measured.peak_pss)} | "
            f"{mb_text(row.measured.peak_single_rss)} | {row.measured.processes} | "
            f"{row.measured.cores:.2f} | {row.measured.others_cores:.2f} |")
    return lines


def _targets_table(targets: list[Target]) -> list[str]:
    lines = ["| target | goal | measured | result |", "| --- | --- | --- | --- |"]
    for target in targets:
        result = ("reported" if target.met is None else
                  f"**met** ({target.detail})" if target.met else
                  f"**not met**: {target.detail}")
        lines.append(f"| {target.name} | {target.goal} | {target.measured} | {result} |")
    unmet = [target for target in targets if target.met is False and target.why]
    if unmet:
        lines += ["", "### Why the unmet targets fall short", "",
                  *[f"- **{target.name}**: {target.why}" for target in unmet]]
    return lines


def markdown(results: Results, how_to_repeat: list[str]) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Written by `{results.command}` on {results.started:%Y-%m-%d %H:%M} (local time); the "
        f"run took {results.total_seconds / 60:.1f} minutes. Absolute times on a shared machine "
        "drift from run to run; the ratios, measured in the same run on the same files, hold "
        "better.",
        "",
        *([f"**Incomplete run**: {len(results.failures)} part(s) failed, and what they "
           "measure is missing below: " + "; ".join(results.failures), ""]
          if results.failures else []),
        "## Machine",
        "",
        *_key_values([*results.machine,
                      ("load average (1/5/15 min)",
                       f"before: {results.load_before}; after: {results.load_after}"),
                      ("pipeline code measured", results.code)]),
        "",
        "## Trees",
        "",
        "Synthetic sessions of scanner-sized files (made-up identifiers only), written by "
        "`deidpipe.synthetic` from pydicom's test files with the pixel data enlarged; every file "
        "has its own study, series and instance UIDs. Each session has three series:",
        "",
        *[f"- {series}" for series in results.series],
        "",
        "| tree | sessions × files | files, MB | used for |",
        "| --- | --- | --- | --- |",
        *[f"| {name} | {shape} | {size} | {use} |" for name, shape, size, use in results.trees],
        "",
        "## Throughput on the same tree",
        "",
        "Files in the page cache. Times are wall-clock of the whole command(s), start-up "
        "included; per-session commands run one after another and their times add up. CPU ms "
        "per file is the CPU time of every process of the command(s) divided by the files. "
        "Peak RSS is the largest sum over a command's process tree (sampled every 20 ms; – : "
        "over before the first sample); CPU is the tree's CPU time / wall time (cores busy); "
        "others' CPU is what the rest of the machine used meanwhile (this script's sampling "
        "included): above ~0.3 the row was measured while something else ran.",
        "",
        *_throughput_table(results),
        "",
        *[f"- {row.name}: {row.note}" for row in results.throughput if row.note],
    ]
    if results.limit:
        lines += ["", "### How close the pipeline is to the limit", "",
                  *_key_values(results.limit)]
    if results.ocr:
        lines += ["", "### OCR (text burned into pixels)", "",
                  "Verification with OCR on (the default) against OCR off (`--settings` "
                  "`{\"checks\": {\"burned_in_text\": \"off\", \"burned_in_text_review\": "
                  "\"off\"}}`), the same thread count; the difference is OCR's (rapidocr's "
                  "PP-OCR models on the CPU, their loading included).", "",
                  *_key_values(results.ocr)]
    lines += [
        "",
        "## Jobs on one session: memory and CPU",
        "",
        "One stage job and one verify job (`python -m deidpipe …`, as the rules run them; "
        "verification with its default settings, OCR on), files in the page cache. Peak RSS "
        "(tree) sums every process of the job (the job and its worker processes; forked "
        "workers share pages with their parent, so the sum over-counts; the targets use it); "
        "peak PSS (tree) splits shared pages between the processes sharing them, which is what "
        "the job really holds (sampled every ~100 ms); peak RSS (one process) is the largest "
        "single process.",
        "",
        *_jobs_table(results.jobs),
    ]
    if results.fixed:
        lines += ["", "## Fixed cost per session", "", *_key_values(results.fixed)]
    if results.planning:
        lines += ["", "## Planning (`snakemake -n --quiet rules`)", "",
                  *_key_values(results.planning)]
    if results.sheet_load:
        lines += ["", "## Loading the session sheet", "", *_key_values(results.sheet_load)]
    lines += ["", "## Targets", "", *_targets_table(results.targets)]
    lines += ["", "## Where the time goes", ""]
    for title, text in results.profiles:
        lines += [f"### {title}", "", text, ""]
    lines += ["## Checks made during the run", "", *[f"- {check}" for check in results.checks]]
    if results.notes:
        lines += ["", "## Notes", "", *[f"- {note}" for note in results.notes]]
    lines += ["", "## How to repeat", "", *how_to_repeat, ""]
    return "\n".join(lines)
