"""Loading the session sheet: ``deidpipe.sheet.load_sheet`` over the planning sheet, timed in
a fresh Python process (the call alone, and the process with its imports)."""

from __future__ import annotations

import json

from deidbench.commands import load_sheet_command
from deidbench.context import Run
from deidbench.processes import measure
from deidbench.report import Target, short_by
from deidbench.sections.planning import PlanningSheet

SHEET_LOAD_LIMIT_SECONDS = 1.0


def measure_sheet_load(run: Run, sheet: PlanningSheet) -> Target:
    runs = 1 if run.options.quick else 3
    loads, processes = [], []
    for attempt in range(runs):
        log = run.logs / f"sheet-load-{attempt}.log"
        run.quiet()
        processes.append(measure(load_sheet_command(sheet.sheet), cwd=sheet.pipeline, log=log))
        loads.append(json.loads(log.read_text().strip().splitlines()[-1]))
    best = min(loads, key=lambda load: load["load_seconds"])
    seconds = best["load_seconds"]
    each = ", ".join(f"{load['load_seconds']:.3f}" for load in loads)
    run.results.sheet_load = [
        ("sheet", f"{sheet.rows} rows (the planning sheet), each dicom_dir checked"),
        ("`load_sheet` call",
         f"{seconds:.3f} s (best of {runs}: {each} s); "
         f"{best['rows']} sessions returned"),
        ("the whole process (Python start-up, importing deidpipe.sheet, the call)",
         f"{min(process.wall for process in processes):.2f} s; the import alone "
         f"{best['import_seconds']:.2f} s"),
    ]
    run.say(f"sheet load: {seconds:.3f} s for {sheet.rows} rows")
    met, detail = short_by(seconds, SHEET_LOAD_LIMIT_SECONDS, higher_is_better=False)
    why = (f"reading and checking {sheet.rows} rows took {seconds:.2f} s: the check looks at "
           "every row's labels and at its dicom_dir (a stat and one directory entry per row)")
    return Target(f"sheet load, {sheet.rows} rows (`deidpipe.sheet.load_sheet`)",
                  f"< {SHEET_LOAD_LIMIT_SECONDS:g} s", f"{seconds:.3f} s", met, detail, why)
