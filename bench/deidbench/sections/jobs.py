"""One session's stage and verify jobs, a large session and a small one: memory (RSS and PSS
summed over the job's processes) and CPU use."""

from __future__ import annotations

from deidbench.commands import stage_command, verify_command
from deidbench.context import Run, Trees
from deidbench.processes import measure
from deidbench.report import Row
from deidbench.trees import warm_cache

JOB_THREADS = 2  # what the rules get on a 2-core machine (they ask for 4; --cores 2 caps it)

Jobs = dict[tuple[str, str], Row]  # (session size, step) -> row


def measure_jobs(run: Run, trees: Trees, jobs: Jobs) -> None:
    """Fill ``jobs`` as they are measured (a failure keeps what was measured before it)."""
    threads = JOB_THREADS
    for label, tree in (("large", trees.large), ("small", trees.small)):
        session = tree.sessions[0]
        target = run.out / f"jobs-{label}-t{threads}"
        warm_cache(tree)
        run.quiet()
        jobs[(label, "stage")] = run.add(
            run.results.jobs, f"stage, {label} session, `--threads {threads}`", tree,
            measure(stage_command(session, run.profile, target, threads),
                    log=run.logs / f"job-stage-{label}-t{threads}.log"))
        warm_cache(tree)
        run.quiet()
        reports = target / "reports"
        reports.mkdir()
        jobs[(label, "verify")] = run.add(
            run.results.jobs, f"verify, {label} session, `--threads {threads}`", tree,
            measure(verify_command(session, run.profile, target, reports, threads,
                                   run.verify_takes_threads),
                    log=run.logs / f"job-verify-{label}-t{threads}.log"))
        run.trash.discard(target)
