"""Measuring a command: wall time, CPU time and peak memory of its whole process tree.

A command runs as a child process; its tree is sampled from /proc every ~20 ms for resident
memory (summed over the tree) and, every fifth sample, proportional memory (shared pages split
between the processes sharing them). Its CPU time is the rusage of the child and of every
descendant it waited for. What the rest of the machine used meanwhile is recorded too, so that
a measurement taken while someone else was busy can be told apart.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MB = 1_000_000
SAMPLE_SECONDS = 0.02
PSS_EVERY = 5  # smaps_rollup costs ~1 ms per process: every 5th sample (~100 ms)


@dataclass
class Measurement:
    """One command's run: wall time, CPU time of its tree, peak summed RSS of its tree, and the
    CPU time the rest of the machine used meanwhile (a shared machine's noise, made visible)."""

    wall: float
    cpu: float
    peak_rss: int  # bytes, summed over the process tree at the sampled peak (0: not sampled)
    peak_single_rss: int  # bytes, the largest single process seen in the samples
    processes: int  # most processes seen in the tree at once
    others_cpu: float = 0.0  # CPU seconds used by other processes on the machine meanwhile
    # Proportional set size summed over the tree (shared pages split between the processes
    # that share them: what the tree really holds), sampled every PSS_EVERY samples.
    peak_pss: int = 0

    @property
    def cores(self) -> float:
        return self.cpu / self.wall if self.wall else 0.0

    @property
    def others_cores(self) -> float:
        return max(0.0, self.others_cpu / self.wall) if self.wall else 0.0


class CommandFailed(RuntimeError):
    pass


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used since boot (/proc/stat)."""
    with open("/proc/stat") as handle:
        fields = handle.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def wait_for_quiet(say: Callable[[str], None], limit: float = 20.0) -> float:
    """Wait (up to ``limit`` seconds) until the rest of the machine uses under a third of a
    core, so that a measurement does not start in the middle of someone else's burst. Returns
    the seconds waited."""
    waited = 0.0
    while waited < limit:
        before = machine_busy_seconds()
        time.sleep(0.5)
        waited += 0.5
        if (machine_busy_seconds() - before) / 0.5 < 0.33:
            return waited
    say(f"the machine stayed busy for {limit:.0f} s; measuring anyway")
    return waited


def _children(pid: int) -> list[int]:
    children: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return children
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                children += [int(child) for child in handle.read().split()]
        except OSError:
            continue
    return children


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _tree_memory(root: int, with_pss: bool = False) -> tuple[int, int, int, int]:
    """Summed resident set size of ``root`` and all its descendants, the largest of them, how
    many processes there are, and (``with_pss``) their summed proportional set size."""
    total, largest, count, pss, stack = 0, 0, 0, 0, [root]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/statm") as handle:
                rss = int(handle.read().split()[1]) * PAGE_SIZE
        except (OSError, IndexError, ValueError):
            continue
        total, largest, count = total + rss, max(largest, rss), count + 1
        if with_pss:
            pss += _pss(pid)
        stack += _children(pid)
    return total, largest, count, pss


def measure(command: Sequence[str | Path], cwd: Path | None = None,
            log: Path | None = None, check: bool = True) -> Measurement:
    """Run ``command`` (output to ``log``, or discarded); sample its process tree until it
    exits. ``check``: raise CommandFailed, with the log's tail, if it exits non-zero."""
    command = [str(part) for part in command]
    log_handle = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    try:
        busy_before = machine_busy_seconds()
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, stdout=log_handle,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        peak, peak_single, most, peak_pss, samples = 0, 0, 0, 0, 0
        while True:
            # Sleep first: right after the fork the child may still be a copy of this process.
            # (rusage's ru_maxrss is no help: Linux carries that copy's size across exec.)
            time.sleep(SAMPLE_SECONDS)
            samples += 1
            rss, single, count, pss = _tree_memory(process.pid, samples % PSS_EVERY == 1)
            peak, peak_single, most = max(peak, rss), max(peak_single, single), max(most, count)
            peak_pss = max(peak_pss, pss)
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid == process.pid:
                break
        wall = time.perf_counter() - started
        busy = machine_busy_seconds() - busy_before
        process.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if log:
            log_handle.close()  # type: ignore[union-attr]
    if check and process.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:] if log else ""
        raise CommandFailed(f"exit {process.returncode}: {' '.join(command)}\n{tail}")
    cpu = usage.ru_utime + usage.ru_stime
    return Measurement(wall=wall, cpu=cpu, peak_rss=peak, peak_single_rss=peak_single,
                       processes=most, others_cpu=busy - cpu, peak_pss=peak_pss)


def combine(parts: list[Measurement]) -> Measurement:
    """Commands run one after another: times add up, peaks are the highest."""
    return Measurement(wall=sum(part.wall for part in parts), cpu=sum(part.cpu for part in parts),
                       peak_rss=max(part.peak_rss for part in parts),
                       peak_single_rss=max(part.peak_single_rss for part in parts),
                       processes=max(part.processes for part in parts),
                       others_cpu=sum(part.others_cpu for part in parts),
                       peak_pss=max(part.peak_pss for part in parts))


def fastest(runs: list[Measurement]) -> Measurement:
    """The fastest of repeated runs (noise on a shared machine only ever adds time)."""
    return min(runs, key=lambda run: run.wall)
