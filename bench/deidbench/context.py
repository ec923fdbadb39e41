"""What every section of a run shares: the options, the work folders, the trees, the generated
profile, the trash, the results being gathered, and saying what is going on."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from deidbench.commands import PROFILE_NAME
from deidbench.processes import MB, Measurement, wait_for_quiet
from deidbench.report import Results, Row
from deidbench.trees import Template, Trash, Tree, build_templates, build_tree

Result = TypeVar("Result")


@dataclass
class Trees:
    main: Tree  # the throughput tree
    large: Tree  # one large session (memory and CPU of its jobs)
    small: Tree  # one small session (how memory grows with the files)
    tiny: Tree  # one-file sessions (the fixed cost per session)


class Run:
    """One benchmark run: each section adds rows, checks and notes to ``self.results``."""

    def __init__(self, options: argparse.Namespace, command: str) -> None:
        self.options = options
        self.clock = time.perf_counter()
        self.results = Results(command, dt.datetime.now())
        self.work = options.workdir.resolve()
        self.out, self.logs = self.work / "out", self.work / "logs"
        self.trash = Trash(self.work / "trash")
        self.profile = self.work / f"{PROFILE_NAME}.yaml"
        self.verify_takes_threads = False
        self.code_digest = ""
        self.wait_budget = options.max_wait
        self._templates: list[Template] = []

    def say(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.clock:6.1f}s] {message}", file=sys.stderr,
              flush=True)

    def quiet(self) -> None:
        """Wait for a quiet machine before a measurement, within the run's waiting budget."""
        if self.wait_budget > 0:
            self.wait_budget -= wait_for_quiet(self.say, min(20.0, self.wait_budget))

    def add(self, rows: list[Row], name: str, tree: Tree, measured: Measurement,
            note: str = "") -> Row:
        """A measured row over ``tree``, added to ``rows`` and said."""
        row = Row(name, tree.files, tree.mb, measured, note)
        rows.append(row)
        self.say(f"{name}: {measured.wall:.2f} s, {row.files_per_second:,.0f} files/s, "
                 f"peak RSS {measured.peak_rss / MB:.0f} MB, {measured.cores:.2f} cores "
                 f"(others {measured.others_cores:.2f})")
        return row

    def templates(self) -> list[Template]:
        if not self._templates:
            self._templates.extend(build_templates(self.work))
        return self._templates

    def build_trees(self) -> Trees:
        options, folder = self.options, self.work / "trees"
        self.say("building synthetic trees (cached by size)")
        trees = Trees(
            main=build_tree(folder, self.templates, "main", 1, options.sessions, options.files),
            large=build_tree(folder, self.templates, "large", 2, 1, options.large_files),
            small=build_tree(folder, self.templates, "small", 3, 1, options.small_files),
            tiny=build_tree(folder, self.templates, "tiny", 4, options.tiny_sessions, 1))
        self.results.series = [template.describe() for template in self.templates()]
        for name, tree, use in (
                ("main", trees.main, "throughput, OCR, the limit, profiles"),
                ("large", trees.large, "memory and CPU of one session's jobs"),
                ("small", trees.small, "how memory grows with the session"),
                ("tiny", trees.tiny, "fixed cost per session (one file each)")):
            self.results.trees.append((
                name, f"{len(tree.sessions)} × {tree.files // max(1, len(tree.sessions))}",
                f"{tree.files:,} files, {tree.mb:,.0f} MB", use))
        self.say(f"throughput tree: {trees.main.files} files, {trees.main.mb:.0f} MB in "
                 f"{len(trees.main.sessions)} sessions")
        return trees

    def attempt(self, what: str, step: Callable[..., Result], *arguments: Any) -> Result | None:
        """``step(*arguments)``; if it fails (a command exits non-zero, say, because someone is
        changing the pipeline's code meanwhile), say so, record it, keep what was measured
        before and go on with the next step: None."""
        try:
            return step(*arguments)
        except Exception as error:  # every failure is recorded, and the run goes on
            details = self.logs / f"failed-{len(self.results.failures) + 1}.txt"
            details.write_text("".join(traceback.format_exception(error)), encoding="utf-8")
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            cause = next((line for line in reversed(lines) if "Error" in line), "")
            summary = lines[0][:200] if lines else type(error).__name__
            if cause and cause != summary:
                summary += f" … {cause[:200]}"
            self.results.failures.append(f"{what} ({type(error).__name__}: {summary})")
            self.say(f"FAILED: {what}: {summary} (traceback in {details})")
            return None

    def elapsed(self) -> float:
        return time.perf_counter() - self.clock

    def cleanup(self, folder: Path) -> None:
        """Move a finished folder into the trash, unless the run keeps what it made."""
        if not self.options.keep:
            self.trash.discard(folder)
