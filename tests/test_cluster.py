"""Cluster execution: the demo through Snakemake's cluster-generic executor, each staging and
verification job a separate process started by a fake submit command (tests/fake_cluster/submit)
from another folder with a bare environment, as sbatch or bsub would. The staged bytes, the
verification reports and the summary must be those of a local run, and uploads must stay on the
submit host."""

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import FAKE_FW, REPO, fw_calls, identifiers_in_run_outputs, run_snakemake, tree_digest

SUBMIT = REPO / "tests" / "fake_cluster" / "submit"
PROFILES = REPO / "workflow" / "profiles"


def cluster_profile(folder: Path) -> tuple[Path, dict[str, int]]:
    """The SLURM workflow profile as shipped, with the fake submit command in place of SLURM;
    and what it asks for each staging and verification job (threads, mem_mb, runtime)."""
    profile = yaml.safe_load((PROFILES / "slurm" / "config.yaml").read_text())
    lsf = yaml.safe_load((PROFILES / "lsf" / "config.yaml").read_text())
    # Both cluster profiles ask the same of each job.
    assert {key: lsf[key] for key in ("set-threads", "set-resources")} == {
        key: profile[key] for key in ("set-threads", "set-resources")}
    asked = {rule: {"threads": profile["set-threads"][rule],
                    **profile["set-resources"][rule]} for rule in ("stage", "verify")}
    assert asked["stage"] == asked["verify"]
    submit = (f"{shlex.quote(str(SUBMIT))} {{rule}} {{threads}} {{resources.mem_mb}} "
              f"{{resources.runtime}}")
    profile.update({
        "executor": "cluster-generic", "cluster-generic-submit-cmd": submit, "jobs": 6,
        "seconds-between-status-checks": 1, "latency-wait": 5,
        # A rule that the profile sets nothing for still has values to submit with
        # (different from the profile's, so the test tells them apart).
        "default-resources": ["mem_mb=100", "runtime=5"]})
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder, asked["stage"]


def cluster_args(profile: Path) -> list[str]:
    # run_snakemake passes --cores 2; Snakemake caps threads at --cores even for cluster jobs,
    # so the later --cores 4 lets the jobs ask for what the profile sets.
    return ["--cores", "4", "--workflow-profile", str(profile)]


WRITTEN = re.compile(r"<dt>Written</dt><dd>[^<]*</dd>")


def outputs(project: Path) -> dict:
    """What must not depend on where a job ran."""
    results = project / "results"
    staging = project / "staging"
    digests = tree_digest(staging)
    pages = {name: WRITTEN.sub("", (staging / name).read_text(encoding="utf-8"))
             for name in list(digests) if name.endswith(".review.html")}
    return {
        # Review pages say when they were written (to the minute): compared without that line.
        "staging": {name: digest for name, digest in digests.items() if name not in pages},
        "review_pages": pages,
        "reports": {path.relative_to(results).as_posix(): json.loads(path.read_text())
                    for path in sorted((results / "verify").rglob("*.json"))},
        "summary": (results / "summary.tsv").read_text(),
    }


def calls_by_subject(log: Path) -> list[dict]:
    """The CLI calls by subject, without the times: when each began, and the audit log's name
    (one per attempt)."""
    calls = sorted(fw_calls(log), key=lambda call: call["subject"])
    for call in calls:
        del call["started"]
        call["argv"] = [re.sub(r"\.audit-[0-9A-Za-z-]+\.csv$", ".audit-<time>.csv", word)
                        for word in call["argv"]]
    return calls


def test_cluster_jobs_give_the_local_run_and_uploads_stay_on_the_submit_host(project, tmp_path):
    upload = ["--config", "upload=true", f"fw={FAKE_FW}", "upload_warned=true"]
    local_fw, cluster_fw = tmp_path / "fw-local.jsonl", tmp_path / "fw-cluster.jsonl"
    local = run_snakemake(project, *upload, env={"FAKE_FW_LOG": str(local_fw)})
    assert local.returncode == 0, local.stderr
    expected = outputs(project)
    # Start again from nothing: the local run's outputs, ledger and records go elsewhere.
    for name in ("staging", "results", "upload-ledger.jsonl"):
        shutil.move(project / name, tmp_path / f"local-{name}")
    shutil.rmtree(project / ".snakemake")

    jobs_dir = project / ".snakemake" / "fake-cluster"  # like .snakemake/slurm_logs
    profile, asked = cluster_profile(tmp_path / "profile")
    assert asked == {"threads": 4, "mem_mb": 1000, "runtime": 60}  # as the README says
    cluster = run_snakemake(project, *cluster_args(profile), *upload, timeout=180,
                            env={"FAKE_FW_LOG": str(cluster_fw),
                                 "FAKE_CLUSTER_DIR": str(jobs_dir)})
    # Only staging and verification were submitted, one job per session each, with the
    # resources the cluster profile sets; the profile and the uploads ran on the submit host.
    log = jobs_dir / "jobs.jsonl"
    submitted = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    assert sorted(job["rule"] for job in submitted) == ["stage"] * 3 + ["verify"] * 3, (
        submitted, cluster.stderr[-5000:])
    assert cluster.returncode == 0, cluster.stderr
    assert all({key: job[key] for key in asked} == asked for job in submitted)
    assert len({job["job_id"] for job in submitted}) == 6
    assert "3 session(s): 1 passed, 1 warned, 1 failed verification" in cluster.stderr
    assert "2 uploaded" in cluster.stderr

    # Same bytes, reports, summary and uploads as the local run.
    actual = outputs(project)
    assert actual["staging"] == expected["staging"]
    assert actual["review_pages"] == expected["review_pages"]
    assert len(actual["review_pages"]) == 3
    assert actual["reports"] == expected["reports"]
    assert actual["summary"] == expected["summary"]
    assert len(actual["staging"]) > 10 and len(actual["reports"]) == 3
    assert sorted(call["subject"] for call in fw_calls(cluster_fw)) == ["sub-001", "sub-002"]
    assert calls_by_subject(cluster_fw) == calls_by_subject(local_fw)
    # The jobs' own output (a cluster's job logs) holds no identifiers either.
    assert len(list(jobs_dir.glob("*.out"))) == 6
    assert identifiers_in_run_outputs(project) == []


def planned_jobs(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of each job a dry run lists."""
    jobs: list[tuple[str, dict[str, str]]] = []
    for line in output.splitlines():
        if match := re.fullmatch(r"(?:local)?rule (\w+):", line):
            jobs.append((match.group(1), {}))
        elif (match := re.fullmatch(r"    resources: (.*)", line)) and jobs:
            jobs[-1][1].update(item.split("=", 1) for item in match.group(1).split(", "))
    return jobs


@pytest.mark.parametrize("scheduler", ["slurm", "lsf"])
def test_the_shipped_cluster_profiles_parse_and_plan(project, scheduler):
    """The README's cluster command, as shipped, with the plugin the README installs: the
    profile loads and the plan gives each staging and verification job what the profile asks
    for (a renamed key, a YAML slip or a missing plugin fails here)."""
    profile = yaml.safe_load((PROFILES / scheduler / "config.yaml").read_text())
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--workflow-profile",
         f"workflow/profiles/{scheduler}", "--config", "upload=true", f"fw={FAKE_FW}"],
        cwd=project, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    jobs = planned_jobs(result.stdout + result.stderr)
    assert sorted(rule for rule, _ in jobs) == sorted(
        ["profile", "all"] + ["stage", "verify", "upload"] * 3)
    for rule, resources in jobs:
        asked = profile["set-resources"].get(rule, {})
        assert {key: resources.get(key) for key in asked} == {
            key: str(value) for key, value in asked.items()}, rule
    assert all("mem_mb" in resources for rule, resources in jobs if rule in ("stage", "verify"))
    assert not (project / "staging").exists()  # a dry run stages nothing
