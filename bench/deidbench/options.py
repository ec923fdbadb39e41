"""The benchmark's command-line options and the sizes they default to."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from deidbench.commands import BENCH

FULL_SIZES = {"sessions": 10, "files": 260, "large_files": 5000, "small_files": 100,
              "tiny_sessions": 30, "plan_rows": 10000, "max_wait": 120.0}
QUICK_SIZES = {"sessions": 3, "files": 24, "large_files": 300, "small_files": 30,
               "tiny_sessions": 4, "plan_rows": 500, "max_wait": 5.0}


def parse_options(argv: list[str], description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes for a smoke test (a few minutes)")
    parser.add_argument("--sessions", type=int,
                        help=f"sessions in the throughput tree ({FULL_SIZES['sessions']})")
    parser.add_argument("--files", type=int,
                        help=f"files per session in that tree ({FULL_SIZES['files']})")
    parser.add_argument("--large-files", type=int,
                        help="files of the large session for the memory checks "
                             f"({FULL_SIZES['large_files']})")
    parser.add_argument("--small-files", type=int,
                        help=f"files of the small session ({FULL_SIZES['small_files']})")
    parser.add_argument("--tiny-sessions", type=int,
                        help="one-file sessions for the fixed cost per session "
                             f"({FULL_SIZES['tiny_sessions']})")
    parser.add_argument("--plan-rows", type=int,
                        help=f"rows of the planning sheet ({FULL_SIZES['plan_rows']})")
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "deidpipe-bench",
                        help="work folder (synthetic trees are cached here)")
    parser.add_argument("--output", type=Path,
                        help="results file (bench/RESULTS.md; --quick: bench/RESULTS-quick.md)")
    parser.add_argument("--fwmig-venv", type=Path, default=BENCH / ".venv-flywheel-migration")
    parser.add_argument("--skip-fwmig", action="store_true",
                        help="do not measure flywheel-migration")
    parser.add_argument("--keep", action="store_true", help="keep staged copies and logs")
    parser.add_argument("--profile-planning", action="store_true",
                        help="profile snakemake -n even when planning meets its target")
    parser.add_argument("--max-wait", type=float,
                        help="seconds in all to wait for other processes' load to drop before "
                             "measurements (shared machines; 120, --quick: 5); 0: do not wait")
    options = parser.parse_args(argv)
    for key, value in (QUICK_SIZES if options.quick else FULL_SIZES).items():
        if getattr(options, key) is None:
            setattr(options, key, value)
    if options.output is None:
        options.output = BENCH / ("RESULTS-quick.md" if options.quick else "RESULTS.md")
    options.argv = argv
    return options
