"""Profiles with pyinstrument: a command run under it, and its saved session rendered as
markdown (top entries by own time, the top of the call tree, own time by package), and two
dry runs compared function by function."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deidbench.commands import Command


def profile_command(command: Command, session_file: Path) -> Command:
    """``command`` (``python -m module ...``) run under pyinstrument, saved as a session."""
    if command[1] != "-m":
        raise ValueError(f"not a 'python -m' command: {command}")
    return [command[0], "-m", "pyinstrument", "-r", "pyisession", "-o", session_file, *command[1:]]


def load_session(session_file: Path) -> Any:
    from pyinstrument.session import Session

    return Session.load(str(session_file))


def _report_body(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.splitlines()]
    start = next((i for i, line in enumerate(lines) if line.startswith("Program:")), -1) + 1
    return [line for line in lines[start:]
            if line.strip() and not line.startswith("To view this report")]


def _duration(session: Any) -> str:
    return f"duration {session.duration:.2f} s, CPU time {session.cpu_time:.2f} s"


def package_of(file_path: str | None) -> str:
    """Which package a frame's code belongs to, by its file's path."""
    path = file_path or ""
    if "/site-packages/" in path:
        return path.split("/site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/deidpipe/" in path:
        return "deidpipe"
    if path.startswith("<frozen") or "/lib/python3" in path:
        return "Python's standard library"
    return "other"


def own_time_by_package(session: Any) -> list[tuple[str, float]]:
    """Own time summed by package, largest first. Built-in (C or Rust) functions count as
    "built-in, called from <the caller's package>"."""
    totals: dict[str, float] = {}
    stack: list[tuple[Any, str]] = [(session.root_frame(), "other")]
    while stack:
        frame, caller = stack.pop()
        if frame.is_synthetic:
            continue
        if frame.file_path == "<built-in>":
            package = f"built-in, called from {caller}"
        else:
            package = package_of(frame.file_path)
        real_children = [child for child in frame.children if not child.is_synthetic]
        own = frame.time - sum(child.time for child in real_children)
        totals[package] = totals.get(package, 0.0) + own
        python_package = caller if frame.file_path == "<built-in>" else package
        stack.extend((child, python_package) for child in real_children)
    return sorted(totals.items(), key=lambda item: item[1], reverse=True)


def package_share(session_file: Path, package: str) -> float:
    """The share of a profile's time spent in ``package``'s own code (0 to 1)."""
    session = load_session(session_file)
    seconds = dict(own_time_by_package(session)).get(package, 0.0)
    return seconds / session.duration if session.duration else 0.0


def render_profile(session_file: Path, flat_lines: int = 15, tree_lines: int = 45,
                   packages: int = 8) -> str:
    """Markdown: own time by package, the top entries by own time (flat), then the top of the
    call tree."""
    from pyinstrument.renderers import ConsoleRenderer

    session = load_session(session_file)
    flat = ConsoleRenderer(flat=True, time="seconds").render(session)
    tree = ConsoleRenderer(time="seconds",
                           processor_options={"filter_threshold": 0.02}).render(session)
    by_package = own_time_by_package(session)[:packages]
    duration = session.duration or 1.0
    return "\n".join([
        f"{_duration(session)} (under the profiler)", "",
        "Own time by package:", "", "| package | seconds | share |", "| --- | ---: | ---: |",
        *[f"| {package} | {seconds:.2f} | {seconds / duration:.0%} |"
          for package, seconds in by_package], "",
        "Own time, top entries:", "", "```", *_report_body(flat)[:flat_lines], "```", "",
        "Call tree (entries over 2 %; library frames folded):", "", "```",
        *_report_body(tree)[:tree_lines], "```"])


@dataclass
class FunctionTimes:
    """Per function of a profile: total time (with what it calls; recursion counted once), own
    time, and the functions it calls."""

    total: dict[str, float] = field(default_factory=dict)
    own: dict[str, float] = field(default_factory=dict)
    callees: dict[str, set[str]] = field(default_factory=dict)


def _frame_key(frame: Any) -> str:
    name = f"{frame.class_name + '.' if frame.class_name else ''}{frame.function}"
    return f"{name} ({frame.file_path_short}:{frame.line_no})"


def function_times(session: Any) -> FunctionTimes:
    times = FunctionTimes()
    active: dict[str, int] = {}
    stack = [(session.root_frame(), False)]
    while stack:
        frame, leaving = stack.pop()
        if frame.is_synthetic:
            continue
        key = _frame_key(frame)
        if leaving:
            active[key] -= 1
            continue
        if not active.get(key):
            times.total[key] = times.total.get(key, 0.0) + frame.time
        active[key] = active.get(key, 0) + 1
        real_children = [child for child in frame.children if not child.is_synthetic]
        times.own[key] = times.own.get(key, 0.0) + frame.time - sum(
            child.time for child in real_children)
        times.callees.setdefault(key, set()).update(_frame_key(child) for child in real_children)
        stack.append((frame, True))
        stack.extend((child, False) for child in real_children)
    return times


def render_planning_profile(pipeline_file: Path, bare_file: Path, rows: int = 25) -> str:
    """Markdown: where the pipeline's dry run spends more than the bare workflow's, by total
    time (functions that only pass the time on to one callee left out) and by own time."""
    pipeline, bare = load_session(pipeline_file), load_session(bare_file)
    ours, theirs = function_times(pipeline), function_times(bare)

    def extra(key: str, table: str = "total") -> float:
        return getattr(ours, table).get(key, 0.0) - getattr(theirs, table).get(key, 0.0)

    def passes_on(key: str) -> bool:
        # A wrapper: one function it calls accounts for (nearly) all of its extra time.
        return any(extra(callee) >= 0.9 * extra(key) for callee in ours.callees.get(key, ()))

    by_total = [key for key in sorted(ours.total, key=extra, reverse=True)
                if extra(key) > 0 and not passes_on(key)][:rows]
    by_own = sorted(ours.own, key=lambda key: extra(key, "own"), reverse=True)[:rows]

    def table(keys: list[str], kind: str) -> list[str]:
        return ["| function (file:line) | pipeline (s) | bare (s) | extra (s) |",
                "| --- | ---: | ---: | ---: |",
                *[f"| `{key}` | {getattr(ours, kind).get(key, 0.0):.2f} | "
                  f"{getattr(theirs, kind).get(key, 0.0):.2f} | {extra(key, kind):+.2f} |"
                  for key in keys]]

    return "\n".join([
        f"Pipeline: {_duration(pipeline)}; bare workflow: {_duration(bare)} (both under the "
        "profiler, which slows both alike).", "",
        "Where the pipeline's extra time goes, by total time (with what each function calls; "
        "a function that only passes the time on to one callee is left out), largest "
        "difference first:", "", *table(by_total, "total"), "",
        "By own time (the function's own code, not its callees):", "", *table(by_own, "own")])
