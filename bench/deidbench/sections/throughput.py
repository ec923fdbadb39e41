"""Throughput on the main tree: ``cp -r`` (the I/O floor), reading every file once (the
limit), flywheel-migration, staging, verification with OCR off and on, and the whole pipeline
as the README runs it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from deidbench.checks import check_deidentified, counted
from deidbench.commands import (
    OCR_OFF,
    copy_command,
    pipeline_statuses,
    read_once_command,
    report_statuses,
    run_pipeline,
    stage_command,
    verify_command,
    write_project,
)
from deidbench.context import Run
from deidbench.fwmig import fwmig_command, fwmig_start_up_seconds
from deidbench.processes import Measurement, combine, fastest, measure
from deidbench.report import Row
from deidbench.trees import Tree, warm_cache

COPY_RUNS = 3  # at the start and again at the end of the run
STAGE_THREADS = (1, 2)
VERIFY_THREADS = (1, 2)  # 1: as the pipeline runs a session below large_session_files
OCR_THREADS = 2  # verification with OCR on, compared with OCR off at the same thread count


@dataclass
class Throughput:
    """The main tree's rows, by what they measured."""

    cp: Row
    read_once: Row
    fwmig: Row | None
    stage: dict[int, Row]
    verify_without_ocr: dict[int, Row]
    verify_with_ocr: Row
    pipeline: Row
    pipeline_one_thread: Row
    copy_runs: list[Measurement] = field(default_factory=list)

    @property
    def ocr_seconds(self) -> float:
        return (self.verify_with_ocr.measured.wall
                - self.verify_without_ocr[OCR_THREADS].measured.wall)


def _copy_floor(run: Run, tree: Tree, runs: list[Measurement]) -> None:
    """``cp -r`` of the tree, COPY_RUNS times. Its time is nearly all kernel time and varies a
    lot on a virtual machine (fresh page-cache pages), so it runs at the start and at the end
    and the fastest run counts (noise only ever adds time)."""
    for _ in range(COPY_RUNS):
        target = run.out / f"cp-{len(runs) + 1}"
        warm_cache(tree)
        run.quiet()
        runs.append(measure(copy_command(tree.root, target)))
        run.trash.discard(target)


def _stage_tree(run: Run, tree: Tree, threads: int, target: Path) -> Measurement:
    warm_cache(tree)
    run.quiet()
    return combine([measure(stage_command(session, run.profile, target, threads),
                            log=run.logs / f"stage-t{threads}-{session.name}.log")
                    for session in tree.sessions])


def _verify_tree(run: Run, tree: Tree, threads: int, staged: Path, reports: Path,
                 settings: str, label: str) -> Measurement:
    warm_cache(tree)
    reports.mkdir(parents=True)
    run.quiet()
    return combine([measure(verify_command(session, run.profile, staged, reports, threads,
                                           run.verify_takes_threads, settings),
                            log=run.logs / f"verify-{label}-t{threads}-{session.name}.log")
                    for session in tree.sessions])


def _fwmig(run: Run, tree: Tree, python: Path, rows: list[Row]) -> Row:
    warm_cache(tree)
    run.quiet()
    log, target = run.logs / "fwmig.log", run.out / "fwmig"
    measured = measure(fwmig_command(python, run.profile, tree.root, target), log=log)
    row = run.add(rows, "flywheel-migration (1 process, 1 core)", tree, measured,
                  "`DeIdProfile.process_file` per file, all sessions in one process; of its "
                  f"{measured.wall:.1f} s, {fwmig_start_up_seconds(log):.1f} s is start-up "
                  "(imports, loading the profile)")
    run.results.checks.append(check_deidentified(tree.root, target, "flywheel-migration"))
    run.trash.discard(target)
    return row


def measure_throughput(run: Run, tree: Tree, fwmig_python: Path | None) -> Throughput:
    rows = run.results.throughput  # filled as measured: a failure later keeps them
    out, checks = run.out, run.results.checks
    copy_runs: list[Measurement] = []
    _copy_floor(run, tree, copy_runs)
    cp = run.add(rows, "`cp -r` (I/O floor)", tree, fastest(copy_runs))
    fwmig = _fwmig(run, tree, fwmig_python, rows) if fwmig_python else None

    stage: dict[int, Row] = {}
    for threads in STAGE_THREADS:
        stage[threads] = run.add(
            rows, f"staging, `--threads {threads}` (one job per session)", tree,
            _stage_tree(run, tree, threads, out / f"stage-t{threads}"))
    staged = out / f"stage-t{STAGE_THREADS[0]}"
    checks.append(check_deidentified(tree.root, staged, f"staging (--threads "
                                                        f"{STAGE_THREADS[0]})"))
    for threads in STAGE_THREADS[1:]:
        run.trash.discard(out / f"stage-t{threads}")

    warm_cache(tree)
    run.quiet()
    read_once = run.add(
        rows, "reading every source and staged file once (the limit)", tree,
        measure(read_once_command(tree.root, staged)),
        "one Python process reads every source file and every staged file (and manifest) "
        f"whole, once: {2 * tree.mb:,.0f} MB in all, the least any pipeline that stages and "
        "then checks each file must read")

    verify_without_ocr: dict[int, Row] = {}
    for threads in VERIFY_THREADS:
        reports = out / f"verify-no-ocr-t{threads}"
        verify_without_ocr[threads] = run.add(
            rows, f"verification, OCR off, `--threads {threads}` (one job per session)", tree,
            _verify_tree(run, tree, threads, staged, reports, OCR_OFF, "no-ocr"))
        checks.append(f"verification, OCR off (--threads {threads}): "
                      f"{counted(report_statuses(reports))}")
    reports = out / f"verify-ocr-t{OCR_THREADS}"
    verify_with_ocr = run.add(
        rows, f"verification, OCR on (default settings), `--threads {OCR_THREADS}`", tree,
        _verify_tree(run, tree, OCR_THREADS, staged, reports, "{}", "ocr"))
    checks.append(f"verification, OCR on (--threads {OCR_THREADS}): "
                  f"{counted(report_statuses(reports))} (warn: CT_small.dcm keeps vendor "
                  "private tags, which the profile leaves alone)")
    _ocr_rows(run, verify_with_ocr, verify_without_ocr[OCR_THREADS], reports)

    project = run.work / "project-main"
    write_project(project, tree.sessions, run.trash)
    warm_cache(tree)
    run.quiet()
    pipeline = run.add(
        rows, "whole pipeline, `snakemake --cores 2` (upload off)", tree,
        run_pipeline(project, run.logs / "pipeline-main.log", run.trash),
        "the README's command, from a clean folder (no staging, results or .snakemake): "
        "Snakemake start-up, the profile job, a stage and a verify job per session (OCR on), "
        "the summary and report")
    checks.append(f"whole pipeline: summary.tsv says {counted(pipeline_statuses(project))}")
    # The rules ask for 4 threads, which --cores 2 caps at 2: one job at a time. With one
    # thread per job, two sessions' jobs run side by side instead (README, "Speed").
    warm_cache(tree)
    run.quiet()
    pipeline_one_thread = run.add(
        rows, "whole pipeline, `snakemake --cores 2 --set-threads stage=1 verify=1`", tree,
        run_pipeline(project, run.logs / "pipeline-one-thread.log", run.trash,
                     extra=["--set-threads", "stage=1", "verify=1"]),
        "as above, but two single-threaded jobs side by side instead of one job with two "
        "worker processes")
    run.cleanup(project)
    # Table order: the floors first, then flywheel-migration, then ours.
    rows.remove(read_once)
    rows.insert(1, read_once)
    result = Throughput(cp, read_once, fwmig, stage, verify_without_ocr, verify_with_ocr,
                        pipeline, pipeline_one_thread, copy_runs)
    _limit_rows(run, result)
    return result


def _ocr_rows(run: Run, with_ocr: Row, without_ocr: Row, reports: Path) -> None:
    """What reading burned-in text costs: verification with OCR on, as by default, against
    off; OCR's images per second from the frames the reports say it read."""
    ocr = [(json.loads(path.read_text()).get("ocr") or {}) for path in reports.glob("*.json")]
    read = sum(counts.get("read", 0) for counts in ocr)
    frames = sum(counts.get("frames", 0) for counts in ocr)
    seconds = with_ocr.measured.wall - without_ocr.measured.wall
    cpu = with_ocr.measured.cpu - without_ocr.measured.cpu
    per_image = seconds / read if read else 0.0
    run.results.ocr = [
        ("images OCR read (of all frames)",
         f"{read} of {frames} ({100 * read / frames if frames else 0:.1f}%): the first, middle "
         "and last image of each series, and every image at risk of burned-in text"),
        ("OCR's time in verification",
         f"{seconds:.1f} s of {with_ocr.measured.wall:.1f} s "
         f"({seconds / with_ocr.measured.wall if with_ocr.measured.wall else 0:.0%}), "
         f"{cpu:.1f} s of CPU; {per_image:.2f} s per image read, the models' loading in each of "
         f"the {len(ocr)} jobs included"),
        ("verification's files/s, OCR on / OCR off",
         f"{number_text(with_ocr.files_per_second)} / "
         f"{number_text(without_ocr.files_per_second)}"),
    ]


def number_text(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _limit_rows(run: Run, throughput: Throughput) -> None:
    limit = throughput.read_once

    def versus(row: Row) -> str:
        share = row.files_per_second / limit.files_per_second
        return (f"{number_text(row.files_per_second)} files/s: {share:.3f}× the limit "
                f"({1 / share:,.0f} times slower)")

    run.results.limit = [
        ("the limit: reading every source and staged file once",
         f"{limit.measured.wall:.2f} s, {number_text(limit.files_per_second)} files/s "
         f"({limit.cpu_ms_per_file:.2f} ms CPU per file)"),
        ("whole pipeline, `snakemake --cores 2`", versus(throughput.pipeline)),
        ("whole pipeline, `--set-threads stage=1 verify=1`",
         versus(throughput.pipeline_one_thread)),
        ("staging alone, `--threads 2`", versus(throughput.stage[2])),
        ("verification alone, OCR off, `--threads 2`",
         versus(throughput.verify_without_ocr[2])),
    ]


def copy_floor_again(run: Run, tree: Tree, throughput: Throughput) -> None:
    """``cp -r`` again at the end of the run; the fastest of all its runs counts."""
    _copy_floor(run, tree, throughput.copy_runs)
    throughput.cp.measured = fastest(throughput.copy_runs)
    walls = sorted(run.wall for run in throughput.copy_runs)
    throughput.cp.note = (
        f"fastest of {len(walls)} runs, {COPY_RUNS} at the start of the run and {COPY_RUNS} at "
        f"the end; they took {walls[0]:.2f}–{walls[-1]:.2f} s (median "
        f"{walls[len(walls) // 2]:.2f} s): nearly all kernel time, which varies on a virtual "
        "machine")
    run.say(f"`cp -r` again: fastest {walls[0]:.2f} s of {len(walls)} runs")
