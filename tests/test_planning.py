"""Planning: what every snakemake call (a dry run, each cluster job) pays before a job runs."""

import json
import re
import subprocess
import sys

from conftest import run_snakemake

# Imported by staging and verification only: planning has no use for them (pydicom alone costs
# a third of a second; matplotlib, fw-file-rs and deid more).
HEAVY = ("pydicom", "fw_file_rs", "deid", "matplotlib", "pandas", "rapidocr", "onnxruntime")


def imported_packages(stderr: str) -> set[str]:
    """Top-level packages named by ``python -X importtime``'s lines."""
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", stderr, re.MULTILINE)
    return {name.split(".")[0] for name in names}


def planning_imports(folder, *args: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "snakemake", "-n", "--cores", "2", *args],
        cwd=folder, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return imported_packages(result.stderr)


def test_planning_imports_no_dicom_or_plotting_library(project, tmp_path):
    packages = planning_imports(project)
    assert "deidpipe" in packages and "snakemake" in packages  # the measurement works
    # Snakemake itself loads every installed executor plugin (the SLURM one imports pandas):
    # what a one-rule workflow imports in the same environment is not the pipeline's doing.
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "Snakefile").write_text('rule all:\n    shell: "true"\n')
    snakemakes_own = planning_imports(bare)
    assert sorted((packages - snakemakes_own) & set(HEAVY)) == []


def test_importtime_lines_are_read():
    # The test above is only worth something if importing pydicom shows up as pydicom.
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import pydicom"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert "pydicom" in imported_packages(result.stderr)


def shell_commands(output: str, rule: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Shell command:")
            and re.search(rf" -m deidpipe --results results {rule} ", line)]


def test_commands_are_short_and_settings_are_one_file(project):
    result = run_snakemake(project, "-n", "-p")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    verify, stage = shell_commands(output, "verify"), shell_commands(output, "stage")
    assert len(verify) == 3 and len(stage) == 3
    # The settings are not repeated in every command: one file, named by their digest, that
    # a dry run does not write.
    settings = {re.search(r"--settings-file (\S+)", line).group(1) for line in verify}
    assert len(settings) == 1
    (path,) = settings
    assert re.fullmatch(r"results/settings/verify-[0-9a-f]{12}\.json", path)
    assert "checks" not in "".join(verify)
    assert not (project / "results").exists()
    # The labels come from the manifest's place, not from options.
    assert "--subject" not in "".join(verify)
    # A dry run asks no session for its size.
    assert all("--threads 1" in line for line in verify + stage)

    assert run_snakemake(project).returncode == 0
    assert json.loads((project / path).read_text()) == {
        "checks": {}, "identifier_attributes": [], "ocr": {}, "phi_log": ""}
    assert (project / path).stat().st_mode & 0o077 == 0
    # Each job wrote its own log (not a log: of the rule) where paths.log puts it.
    logs = project / "results" / "logs"
    assert sorted(log.relative_to(logs).as_posix() for log in logs.rglob("*.log")) == [
        "profile/PennBrainScienceCenter.log",
        *(f"{step}/demo/deid-demo/sub-00{n}/ses-01.log" for step in ("stage", "verify")
          for n in (1, 2, 3))]
    assert (logs / "verify/demo/deid-demo/sub-003/ses-01.log").read_text().startswith(
        "verification fail: ")


def planned_rules(project, *args: str) -> list[str]:
    result = run_snakemake(project, "-n", *args)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    return sorted(re.findall(r"^(?:local)?rule (\w+):", output, re.MULTILINE))


def test_other_verification_settings_verify_again_and_only_that(project):
    assert run_snakemake(project).returncode == 0
    assert planned_rules(project) == []
    assert planned_rules(project, "--config", "checks={name_part: fail}") == (
        ["all"] + ["verify"] * 3)


def job_threads(output: str) -> dict[str, set[str]]:
    """The --threads each rule's jobs were run with (from the commands -p prints)."""
    found: dict[str, set[str]] = {}
    for rule, threads in re.findall(r" -m deidpipe --results results (\w+) .*--threads (\d+)",
                                    output):
        found.setdefault(rule, set()).add(threads)
    return found


def test_a_session_gets_one_core_and_a_large_one_every_core(project):
    # The demo's sessions are small: one core each, so that they run side by side.
    small = run_snakemake(project, "-p")
    assert small.returncode == 0, small.stderr
    assert job_threads(small.stdout + small.stderr) == {"stage": {"1"}, "verify": {"1"}}
    # With large_session_files below their size, each gets all of --cores: staging counts the
    # source files, verification reads the manifest.
    large = run_snakemake(project, "-p", "--forceall", "--config", "large_session_files=2")
    assert large.returncode == 0, large.stderr
    assert job_threads(large.stdout + large.stderr) == {"stage": {"2"}, "verify": {"2"}}
    # --set-threads has the last word (as in the cluster profiles).
    fixed = run_snakemake(project, "-p", "--forceall", "--set-threads", "stage=2", "verify=1")
    assert fixed.returncode == 0, fixed.stderr
    assert job_threads(fixed.stdout + fixed.stderr) == {"stage": {"2"}, "verify": {"1"}}
