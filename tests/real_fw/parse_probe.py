"""Run with a Flywheel CLI's own Python: parse each command line given (a JSON list of argument
lists on stdin) with the CLI's own argument parser, built as its ``fw`` entry point builds it,
and print for each whether it is accepted and, if so, the values parsed (JSON on stdout)."""

import argparse
import contextlib
import io
import json
import sys

from flywheel_cli import monkey
from flywheel_cli.commands import add_commands


def main() -> None:
    monkey.patch_fs()  # as flywheel_cli.main.main does before building its parser
    parser = argparse.ArgumentParser(prog="fw", description="Flywheel command-line interface")
    add_commands(parser)
    results = []
    for argv in json.load(sys.stdin):
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors):
                parsed = parser.parse_args(argv)
        except SystemExit:
            lines = errors.getvalue().strip().splitlines()
            results.append({"accepted": False, "error": lines[-1] if lines else ""})
            continue
        results.append({"accepted": True, "values": {
            name: value for name, value in vars(parsed).items()
            if value is None or isinstance(value, str | int | float | bool)}})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
