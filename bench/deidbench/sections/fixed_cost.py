"""The fixed cost per session: the whole pipeline over many one-file sessions against one."""

from __future__ import annotations

from deidbench.checks import counted
from deidbench.commands import (
    pipeline_statuses,
    run_pipeline,
    stage_command,
    verify_command,
    write_project,
)
from deidbench.context import Run, Trees
from deidbench.processes import measure
from deidbench.report import Target
from deidbench.sections.jobs import Jobs
from deidbench.trees import warm_cache


def measure_fixed_cost(run: Run, trees: Trees, jobs: Jobs | None) -> Target:
    """``jobs`` (the large session's, when measured) puts the fixed cost in files."""
    tiny, count = trees.tiny, len(trees.tiny.sessions)
    project = run.work / "project-tiny"
    write_project(project, tiny.sessions, run.trash)
    warm_cache(tiny)
    run.quiet()
    many = run_pipeline(project, run.logs / "pipeline-tiny.log", run.trash)
    statuses = pipeline_statuses(project)
    write_project(project, tiny.sessions[:1], run.trash)
    one = run_pipeline(project, run.logs / "pipeline-tiny-one.log", run.trash)
    run.cleanup(project)
    target = run.out / "tiny-job"
    one_stage = measure(stage_command(tiny.sessions[0], run.profile, target, 1),
                        log=run.logs / "tiny-stage.log")
    (target / "reports").mkdir()
    one_verify = measure(verify_command(tiny.sessions[0], run.profile, target,
                                        target / "reports", 1, run.verify_takes_threads),
                         log=run.logs / "tiny-verify.log")
    run.trash.discard(target)
    per_session = (many.wall - one.wall) / (count - 1) if count > 1 else many.wall
    worth = ""
    if jobs and ("large", "verify") in jobs:
        large = jobs[("large", "stage")]
        per_file = (large.measured.wall + jobs[("large", "verify")].measured.wall) / large.files
        worth = (f"; staging and verifying a file of the large session costs "
                 f"{per_file * 1000:.1f} ms (2 threads), so a session's fixed cost is worth "
                 f"{per_session / per_file:,.0f} files")
    run.results.fixed = [
        (f"whole pipeline, {count} one-file sessions",
         f"{many.wall:.1f} s ({many.wall / count:.2f} s per session; {counted(statuses)})"),
        ("whole pipeline, 1 one-file session",
         f"{one.wall:.1f} s (Snakemake start-up, profile job, one stage and one verify job, "
         "summary)"),
        ("each further session costs",
         f"{per_session:.2f} s (({many.wall:.1f} − {one.wall:.1f}) / {count - 1}){worth}"),
        ("one stage job, one file", f"{one_stage.wall:.2f} s wall, {one_stage.cpu:.2f} s CPU"),
        ("one verify job, one file (OCR on)",
         f"{one_verify.wall:.2f} s wall, {one_verify.cpu:.2f} s CPU"),
    ]
    run.say(f"fixed cost: {many.wall:.1f} s for {count} sessions, {one.wall:.1f} s for one, "
            f"{per_session:.2f} s per further session")
    return Target(
        "many small sessions: fixed cost per session", "small (no number set)",
        f"{per_session:.2f} s per further session ({many.wall / count:.2f} s per session "
        f"over {count}, Snakemake start-up included)", None)
