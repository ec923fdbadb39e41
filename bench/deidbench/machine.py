"""The machine measured on (CPU, cores, memory, versions, load) and the pipeline code measured
(its commit, uncommitted changes, a digest of its files to notice changes during the run)."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version

from deidbench.commands import REPO

CODE_PATHS = ("Snakefile", "workflow", "profiles")


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _os_name() -> str:
    try:
        with open("/etc/os-release") as handle:
            for line in handle:
                if line.startswith("PRETTY_NAME="):
                    name = line.split("=", 1)[1].strip().strip('"')
                    return f"{name}, Linux {platform.release()}"
    except OSError:
        pass
    return platform.platform()


def _virtualisation() -> list[str]:
    found_kinds = []
    for kind, label in (("--vm", "virtual machine"), ("--container", "container")):
        try:
            found = subprocess.run(["systemd-detect-virt", kind], capture_output=True, text=True,
                                   check=False).stdout.strip()
        except OSError:
            break
        if found and found != "none":
            found_kinds.append(f"{label}: {found}")
    return found_kinds


def machine_description(fwmig: dict[str, str] | None) -> list[tuple[str, str]]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as handle:
        memory_kb = next(int(line.split()[1]) for line in handle if line.startswith("MemTotal"))
    virtual = _virtualisation()
    rows = [
        ("CPU", f"{cpu} ({', '.join(virtual)})" if virtual else cpu),
        ("cores", f"{os.cpu_count()} (usable by this process: {len(os.sched_getaffinity(0))})"),
        ("RAM", f"{memory_kb / 1024 / 1024:.1f} GiB"),
        ("OS", _os_name()),
        ("Python", platform.python_version()),
        *[(name, _package_version(name))
          for name in ("fw-file-rs", "pydicom", "snakemake", "rapidocr", "onnxruntime",
                       "pyinstrument")],
    ]
    if fwmig:
        rows.append(("flywheel-migration", f"{fwmig['flywheel-migration']} (own venv: fw-file "
                     f"{fwmig['fw-file']}, pydicom {fwmig['pydicom']}, pandas {fwmig['pandas']})"))
    return rows


def _git(*arguments: str) -> str:
    """A read-only git command in the repository (no optional locks: never writes the index);
    its output, empty when git fails."""
    result = subprocess.run(["git", "--no-optional-locks", *arguments], cwd=REPO,
                            capture_output=True, text=True, check=False)
    return result.stdout if result.returncode == 0 else ""


def code_state() -> tuple[str, str]:
    """The pipeline code measured: a description (commit, uncommitted changes) and a digest of
    its files' contents, to notice when someone changes it during the run."""
    digest = hashlib.sha256()
    for top in CODE_PATHS:
        path = REPO / top
        for file in sorted([path] if path.is_file() else path.rglob("*")):
            if file.is_file() and "__pycache__" not in file.parts:
                digest.update(str(file.relative_to(REPO)).encode() + b"\0" + file.read_bytes())
    commit = _git("log", "-1", "--format=%h %s").strip()
    # Porcelain lines are "XY path": two status letters (either may be a space), a space.
    changed = [line[3:] for line in _git("status", "--porcelain", "--", *CODE_PATHS).splitlines()
               if len(line) > 3]
    if len(commit) > 80:
        commit = commit[:79] + "…"
    description = f"commit {commit}" if commit else "not a git checkout"
    if changed:
        description += f"; uncommitted changes in {', '.join(changed)}"
    return description, digest.hexdigest()


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"
