"""Planning: ``snakemake -n --quiet rules`` of the pipeline over a large sheet against the bare
three-rule workflow (bench/bare/Snakefile) over the same sheet, and a profile of both when the
pipeline is over its limit or near it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deidbench.commands import BARE_SNAKEFILE, run_pipeline, write_project
from deidbench.context import Run
from deidbench.processes import MB, Measurement, fastest
from deidbench.profiling import render_planning_profile
from deidbench.report import Target, short_by

PLANNING_VS_BARE = 1.2  # the pipeline's dry run may take this many times the bare one's
QUIET = ("--quiet", "rules")


@dataclass
class PlanningSheet:
    """A sheet of ``rows`` sessions (each dicom_dir a folder holding one empty file), in a
    pipeline project folder and a bare-workflow project folder."""

    folder: Path
    rows: int
    pipeline: Path
    bare: Path

    @property
    def sheet(self) -> Path:
        return self.pipeline / "sessions.tsv"


def build_planning_sheet(run: Run, rows: int) -> PlanningSheet:
    plan = run.work / "planning"
    run.trash.discard(plan)
    sessions = []
    for row in range(1, rows + 1):
        folder = plan / "dicom" / f"sub-{row:05d}_ses-01"
        folder.mkdir(parents=True)
        # The sheet check refuses an empty folder: one empty file stands for the session.
        (folder / "IM00001.dcm").touch()
        sessions.append(folder)
    sheet = PlanningSheet(plan, rows, plan / "pipeline", plan / "bare")
    write_project(sheet.pipeline, sessions, run.trash)
    write_project(sheet.bare, sessions, run.trash)
    return sheet


@dataclass
class Planning:
    target: Target
    profile: tuple[str, str] | None  # (title, markdown) when profiled


def measure_planning(run: Run, sheet: PlanningSheet) -> Planning:
    rows = sheet.rows
    run.say(f"planning: snakemake -n --quiet rules over {rows} rows")
    pipeline_runs: list[Measurement] = []
    bare_runs: list[Measurement] = []
    for attempt in range(1 if run.options.quick else 2):
        # Alternate, so that a burst of load hits both alike.
        run.quiet()
        pipeline_runs.append(run_pipeline(sheet.pipeline, run.logs / f"plan-pipeline-{attempt}.log",
                                          run.trash, dry_run=True, extra=QUIET))
        bare_runs.append(run_pipeline(sheet.bare, run.logs / f"plan-bare-{attempt}.log",
                                      run.trash, dry_run=True, snakefile=BARE_SNAKEFILE,
                                      extra=QUIET))
    pipeline, bare = fastest(pipeline_runs), fastest(bare_runs)
    ratio = pipeline.wall / bare.wall
    jobs = next((line.strip().removeprefix("total").strip() for line in
                 (run.logs / "plan-pipeline-0.log").read_text().splitlines()
                 if line.strip().startswith("total")), "?")

    def walls(measured: list[Measurement]) -> str:
        return ", ".join(f"{one.wall:.1f}" for one in measured)

    run.results.planning = [
        ("sheet", f"{rows} rows, each dicom_dir an existing folder holding one empty file"),
        ("pipeline, `snakemake -n --quiet rules --cores 2`",
         f"{pipeline.wall:.1f} s (runs: {walls(pipeline_runs)} s; peak RSS "
         f"{pipeline.peak_rss / MB:.0f} MB; jobs: {jobs})"),
        ("bare three-rule workflow (bench/bare/Snakefile), same command",
         f"{bare.wall:.1f} s (runs: {walls(bare_runs)} s; peak RSS {bare.peak_rss / MB:.0f} "
         "MB)"),
        ("ratio (best runs)", f"{ratio:.2f}×"),
    ]
    run.say(f"planning: pipeline {pipeline.wall:.1f} s, bare {bare.wall:.1f} s, {ratio:.2f}×")
    met, detail = short_by(ratio, PLANNING_VS_BARE, higher_is_better=False)
    profile = None
    # Within 10 % of the limit the verdict is down to noise: profile then too.
    if ratio > PLANNING_VS_BARE / 1.1 or run.options.profile_planning:
        run.say("profiling snakemake -n of the pipeline and of the bare workflow")
        pipeline_profile = run.work / "plan-pipeline.pyisession"
        bare_profile = run.work / "plan-bare.pyisession"
        run_pipeline(sheet.pipeline, run.logs / "plan-pipeline-profiled.log", run.trash,
                     dry_run=True, profiler=pipeline_profile, extra=QUIET)
        run_pipeline(sheet.bare, run.logs / "plan-bare-profiled.log", run.trash,
                     dry_run=True, snakefile=BARE_SNAKEFILE, profiler=bare_profile,
                     extra=QUIET)
        profile = (f"Planning, `snakemake -n --quiet rules` over {rows} rows (pyinstrument)",
                   render_planning_profile(pipeline_profile, bare_profile))
    why = (f"the pipeline's dry run takes {pipeline.wall - bare.wall:.1f} s more than the bare "
           "workflow's over the same sheet: it validates the config and every row of the sheet "
           "(each dicom_dir looked at once) and its rules have more inputs, outputs and "
           "parameters to fill in per job; "
           + ("the profile under \"Where the time goes\" lists where the extra time goes."
              if profile else "run with `--profile-planning` for a profile of both."))
    target = Target(
        f"planning, `snakemake -n --quiet rules`, {rows} rows",
        f"≤ {PLANNING_VS_BARE:g}× the bare workflow",
        f"{ratio:.2f}× ({pipeline.wall:.1f} vs {bare.wall:.1f} s)", met, detail, why)
    return Planning(target, profile)
