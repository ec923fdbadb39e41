"""Benchmark the pipeline against ``cp -r``, reading every file once and flywheel-migration;
write bench/RESULTS.md.

    python bench/run.py             # defaults: 10 sessions x 260 scanner-sized files, ~15 min
    python bench/run.py --quick     # smoke test, a few minutes (writes RESULTS-quick.md)

Run it with the project's virtual environment's Python (the one with ``pip install -e
'.[bench]'``): every command measured is ``sys.executable -m deidpipe ...`` or ``-m snakemake``.
flywheel-migration pins pandas 2, so it gets its own virtual environment, made on first use in
bench/.venv-flywheel-migration (``--fwmig-venv``). The code is in the package bench/deidbench,
one module per topic (see its docstring).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deidbench.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
