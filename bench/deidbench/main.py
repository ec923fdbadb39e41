"""Run the benchmark's sections in order and write the results file."""

from __future__ import annotations

import sys

from deidbench.commands import profile_yaml_command, verify_has_threads
from deidbench.context import Run
from deidbench.fwmig import FWMIG_REQUIREMENT, fwmig_python, fwmig_versions
from deidbench.machine import code_state, load_average, machine_description
from deidbench.options import FULL_SIZES, parse_options
from deidbench.processes import measure
from deidbench.report import markdown
from deidbench.sections.fixed_cost import measure_fixed_cost
from deidbench.sections.hotspots import profile_one_session
from deidbench.sections.jobs import Jobs, measure_jobs
from deidbench.sections.planning import build_planning_sheet, measure_planning
from deidbench.sections.sheet_load import measure_sheet_load
from deidbench.sections.targets import (
    memory_targets,
    pipeline_vs_cp_target,
    pipeline_vs_fwmig_target,
    verification_target,
)
from deidbench.sections.throughput import COPY_RUNS, copy_floor_again, measure_throughput

DESCRIPTION = ("Benchmark the pipeline against `cp -r`, reading every file once and "
               "flywheel-migration; write bench/RESULTS.md.")

HOW_TO_REPEAT = [
    "    python3 -m venv .venv && .venv/bin/pip install -e '.[bench]'",
    "    .venv/bin/python bench/run.py              # 15-20 minutes on 2 cores",
    "    .venv/bin/python bench/run.py --quick      # smoke test, a few minutes "
    "(bench/RESULTS-quick.md)",
    "",
    f"Options: `--sessions N --files M` (the throughput tree; {FULL_SIZES['sessions']} × "
    f"{FULL_SIZES['files']}), `--large-files` (the session for the memory checks; "
    f"{FULL_SIZES['large_files']}), `--small-files`, `--tiny-sessions` (one-file sessions for "
    "the fixed cost), `--plan-rows` (rows of the planning sheet), `--workdir` (default: a "
    "folder under /tmp; synthetic trees are cached there), `--output`, `--keep` (keep staged "
    "copies and logs), `--skip-fwmig`, `--profile-planning` (profile both dry runs even when "
    "planning meets its target), `--max-wait` (seconds in all to wait for a quiet machine "
    "before measurements). flywheel-migration is installed on first use into "
    f"bench/.venv-flywheel-migration (`{FWMIG_REQUIREMENT}`; it pins pandas 2). Run nothing "
    "else on the machine meanwhile; compare ratios, not absolute times.",
]


def prepare(run: Run) -> None:
    for folder in (run.out, run.logs):
        run.trash.discard(folder)
        folder.mkdir(parents=True)
    results = run.results
    results.load_before = load_average()
    results.code, run.code_digest = code_state()
    run.verify_takes_threads = verify_has_threads()
    if not run.verify_takes_threads:
        results.notes.append("`deidpipe verify` has no `--threads` option in this version: "
                             "verification ran in one process throughout.")
    measure(profile_yaml_command(run.profile), log=run.logs / "profile.log")


def notes(run: Run) -> None:
    results = run.results
    results.notes += [
        f"Repetitions: `cp -r` runs {2 * COPY_RUNS} times (the fastest counts), each planning "
        "dry run twice (the faster counts), the sheet load three times (the fastest counts); "
        "every other row is a single run, to keep the whole benchmark near a quarter of an "
        "hour on 2 cores.",
        "Nothing is deleted while measuring (ext4 skips inodes deleted in the last one to "
        "five minutes when it creates a file, so a folder where thousands of files were just "
        "deleted makes every new file slow). Another run started within minutes of this one, "
        "or other processes deleting many files nearby, still slow `cp -r` and every step "
        "that creates files: compare the `cp -r` runs' spread in its note.",
    ]
    if run.options.quick:
        results.notes.append(
            f"--quick: sizes are far below the targets' (a {FULL_SIZES['large_files']:,}-file "
            f"session, a {FULL_SIZES['plan_rows']:,}-row sheet, {FULL_SIZES['tiny_sessions']} "
            "one-file sessions); this run is a smoke test only.")


def finish(run: Run) -> None:
    run.cleanup(run.out)
    results = run.results
    results.load_after = load_average()
    if code_state()[1] != run.code_digest:
        results.notes.append(
            "The pipeline's code (Snakefile, workflow/, profiles/) changed while this run "
            "was measuring it: rows measured before and after the change are not "
            "comparable. Run again.")
        run.say("warning: the pipeline's code changed during the run; run again")
    results.total_seconds = run.elapsed()
    run.options.output.write_text(markdown(results, HOW_TO_REPEAT), encoding="utf-8")
    run.say(f"wrote {run.options.output}; deleting what the run left in {run.trash.folder}")
    run.trash.empty()


def main(argv: list[str]) -> int:
    options = parse_options(argv, DESCRIPTION)
    try:
        import pyinstrument  # noqa: F401

        import deidpipe  # noqa: F401
    except ImportError as error:
        print(f"error: {error.name} is not importable by {sys.executable}; run this with the "
              "project's venv after: pip install -e '.[bench]'", file=sys.stderr)
        return 1
    run = Run(options, " ".join(["python bench/run.py", *argv]))
    prepare(run)
    trees = run.build_trees()
    fwmig = None
    if not options.skip_fwmig:
        fwmig = fwmig_python(options.fwmig_venv.resolve(), run.say)
    run.results.machine = machine_description(fwmig_versions(fwmig) if fwmig else None)
    # Each step on its own: one that fails (someone changing the pipeline meanwhile, say) is
    # recorded and the others still run; the targets it feeds are left out.
    attempt = run.attempt
    throughput = attempt("throughput", measure_throughput, run, trees.main, fwmig)
    jobs: Jobs = {}
    attempt("jobs on one session", measure_jobs, run, trees, jobs)
    fixed_cost = attempt("fixed cost per session", measure_fixed_cost, run, trees, jobs)
    sheet = build_planning_sheet(run, options.plan_rows)
    planning = attempt("planning", measure_planning, run, sheet)
    sheet_load = attempt("sheet load", measure_sheet_load, run, sheet)
    run.cleanup(sheet.folder)
    hotspots = attempt("profiles", profile_one_session, run, trees.main)
    if planning and planning.profile:
        run.results.profiles.append(planning.profile)
    targets = run.results.targets
    if throughput:
        attempt("`cp -r` at the end", copy_floor_again, run, trees.main, throughput)
        for target in (attempt("target: verification", verification_target, run, throughput,
                               hotspots),
                       attempt("target: vs flywheel-migration", pipeline_vs_fwmig_target,
                               throughput),
                       attempt("target: vs cp -r", pipeline_vs_cp_target, throughput)):
            if target:
                targets.append(target)
    targets += [target for target in (planning.target if planning else None, sheet_load)
                if target]
    targets += attempt("target: memory", memory_targets, trees, jobs, throughput) or []
    if fixed_cost:
        targets.append(fixed_cost)
    notes(run)
    finish(run)
    return 1 if run.results.failures else 0
