"""The targets: each one's goal, what was measured, met or not (and by how much), and for an
unmet one why it falls short, in figures from the same run."""

from __future__ import annotations

from deidbench.context import Run, Trees
from deidbench.processes import MB
from deidbench.report import Target, short_by
from deidbench.sections.hotspots import Hotspots
from deidbench.sections.jobs import JOB_THREADS, Jobs
from deidbench.sections.throughput import OCR_THREADS, Throughput

VERIFY_VS_STAGE = 1.0  # verification (OCR off) files/s against staging's, on the main tree
PIPELINE_VS_FWMIG = 3.0  # the whole pipeline's files/s against flywheel-migration's
PIPELINE_VS_CP = 0.05  # the whole pipeline's files/s against `cp -r`'s
JOB_RSS_LIMIT_MB = 300.0  # summed RSS over a job's processes, for the large session


def verification_target(run: Run, throughput: Throughput, hotspots: Hotspots | None) -> Target:
    threads = OCR_THREADS
    verify, stage = throughput.verify_without_ocr[threads], throughput.stage[threads]
    ratio = verify.files_per_second / stage.files_per_second
    met, detail = short_by(ratio, VERIFY_VS_STAGE)
    files = run.options.files
    why = (f"verification costs {verify.cpu_ms_per_file:.1f} ms of CPU per file against "
           f"staging's {stage.cpu_ms_per_file:.1f} ms. Staging's per-file work is Flywheel's "
           "engine (fw-file-rs, Rust); verification walks every source header (twice: for the "
           "identifiers to search for, then to compare) and every staged file with the "
           "project's own reader (independent of the engine it checks), converts each "
           "distinct value with pydicom once per process and checks every element in Python; "
           "each verify job also imports pydicom (which staging does not need), so it starts "
           "about half a second later than a stage job.")
    if hotspots:
        why += (f" In the profile of one session below, pydicom's own code is "
                f"{hotspots.verify_share('pydicom'):.0%} of verification's time and deidpipe's "
                f"{hotspots.verify_share('deidpipe'):.0%}.")
    measured = (f"{ratio:.2f}× ({verify.files_per_second:,.0f} vs "
                f"{stage.files_per_second:,.0f} files/s)")
    if 1 in throughput.verify_without_ocr and 1 in throughput.stage:
        # One thread per job: how the pipeline runs sessions below large_session_files.
        single = throughput.verify_without_ocr[1].files_per_second
        measured += (f"; `--threads 1` {single / throughput.stage[1].files_per_second:.2f}× "
                     f"({single:,.0f} vs {throughput.stage[1].files_per_second:,.0f} files/s)")
    return Target(
        f"verification (OCR off) vs staging, the tree's {files}-file sessions, "
        f"`--threads {threads}`", f"≥ {VERIFY_VS_STAGE:g}× staging's files/s", measured, met,
        detail, why)


def pipeline_vs_fwmig_target(throughput: Throughput) -> Target | None:
    fwmig, pipeline = throughput.fwmig, throughput.pipeline
    if not fwmig:
        return None
    ratio = pipeline.files_per_second / fwmig.files_per_second
    one_thread = throughput.pipeline_one_thread.files_per_second / fwmig.files_per_second
    stage = throughput.stage[2].files_per_second / fwmig.files_per_second
    met, detail = short_by(ratio, PIPELINE_VS_FWMIG)
    verify_cpu = throughput.verify_with_ocr.measured.cpu
    why = (f"flywheel-migration only de-identifies; the pipeline de-identifies (staging alone, "
           f"2 threads, is {stage:.1f}× flywheel-migration) and then verifies every file: "
           f"verification with OCR is {verify_cpu:.0f} s of CPU against staging's "
           f"{throughput.stage[2].measured.cpu:.0f} s (OCR {throughput.ocr_seconds:.0f} s of "
           "wall time of it), on two cores where flywheel-migration uses one")
    return Target(
        "whole pipeline (`snakemake --cores 2`) vs flywheel-migration",
        f"≥ {PIPELINE_VS_FWMIG:g}× flywheel-migration's files/s",
        f"{ratio:.2f}× ({pipeline.files_per_second:,.1f} vs {fwmig.files_per_second:,.1f} "
        f"files/s); with `--set-threads stage=1 verify=1` {one_thread:.2f}×", met, detail, why)


def pipeline_vs_cp_target(throughput: Throughput) -> Target:
    cp, pipeline = throughput.cp, throughput.pipeline
    ratio = pipeline.files_per_second / cp.files_per_second
    met, detail = short_by(ratio, PIPELINE_VS_CP)
    # CPU a file may cost on two cores for the pipeline to reach the target.
    budget_ms = 2 * 1000 / (PIPELINE_VS_CP * cp.files_per_second)
    why = (f"`cp -r` costs {cp.cpu_ms_per_file:.2f} ms of CPU per file (the kernel copying "
           f"{cp.mb / cp.files * 1000:.0f} kB of page cache); reaching {PIPELINE_VS_CP:g}× "
           f"would leave the pipeline {budget_ms:.1f} ms of CPU per file on two cores, and it "
           f"uses {pipeline.cpu_ms_per_file:.1f} ms: staging "
           f"{throughput.stage[2].cpu_ms_per_file:.1f} ms and verification with OCR "
           f"{throughput.verify_with_ocr.cpu_ms_per_file:.1f} ms (throughput table)")
    return Target(
        "whole pipeline (`snakemake --cores 2`) vs `cp -r`", f"≥ {PIPELINE_VS_CP:g}×",
        f"{ratio:.3f}× ({pipeline.files_per_second:,.1f} vs {cp.files_per_second:,.0f} files/s)",
        met, detail, why)


def memory_targets(trees: Trees, jobs: Jobs, throughput: Throughput | None) -> list[Target]:
    targets = []
    large, small = trees.large, trees.small
    for step in ("stage", "verify"):
        large_job = jobs[("large", step)].measured
        small_job = jobs[("small", step)].measured
        met, detail = short_by(large_job.peak_rss / MB, JOB_RSS_LIMIT_MB,
                               higher_is_better=False)
        growth = (large_job.peak_rss - small_job.peak_rss) / max(1, large.files - small.files)
        reach = ""
        if growth > 0 and large_job.peak_rss < JOB_RSS_LIMIT_MB * MB:
            at_limit = large.files + (JOB_RSS_LIMIT_MB * MB - large_job.peak_rss) / growth
            reach = (f" (≈{growth / 1000:.1f} kB per file: {JOB_RSS_LIMIT_MB:g} MB at "
                     f"≈{at_limit:,.0f} files if it keeps growing)")
        why = (f"the {small.files}-file session's job peaked at "
               f"{small_job.peak_rss / MB:.0f} MB, so it is not the files: it is what each of "
               f"the job's {large_job.processes} processes loads, and the sum counts pages that "
               "forked workers share with their parent once per process (PSS, which splits "
               "them, is "
               f"{large_job.peak_pss / MB:.0f} MB; the largest process "
               f"{large_job.peak_single_rss / MB:.0f} MB)")
        if step == "verify" and throughput:
            without = throughput.verify_without_ocr[OCR_THREADS].measured.peak_rss
            with_ocr = throughput.verify_with_ocr.measured.peak_rss
            why += (f". With OCR off, the main tree's verify jobs peaked at {without / MB:.0f} "
                    f"MB against {with_ocr / MB:.0f} MB with OCR on (throughput table, the same "
                    f"{OCR_THREADS} threads)")
            if with_ocr > 2 * without:
                why += ": most of it comes with OCR"
        targets.append(Target(
            f"{step} job memory, {large.files}-file session, `--threads {JOB_THREADS}`",
            f"≤ {JOB_RSS_LIMIT_MB:g} MB RSS summed over the job's processes",
            f"{large_job.peak_rss / MB:.0f} MB (largest process "
            f"{large_job.peak_single_rss / MB:.0f} MB, PSS {large_job.peak_pss / MB:.0f} MB); "
            f"{small.files}-file session {small_job.peak_rss / MB:.0f} MB: "
            f"{large.files - small.files} more files add "
            f"{(large_job.peak_rss - small_job.peak_rss) / MB:+.0f} MB{reach}", met, detail, why))
    return targets
