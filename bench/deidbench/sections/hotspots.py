"""Where the time goes: pyinstrument profiles of staging and of verification (OCR off) of one
session of the main tree, one thread (so that the work is in the profiled process)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deidbench.commands import OCR_OFF, stage_command, verify_command
from deidbench.context import Run
from deidbench.processes import measure
from deidbench.profiling import package_share, profile_command, render_profile
from deidbench.trees import Tree, warm_cache


@dataclass
class Hotspots:
    stage_profile: Path
    verify_profile: Path

    def verify_share(self, package: str) -> float:
        return package_share(self.verify_profile, package)


def profile_one_session(run: Run, tree: Tree) -> Hotspots:
    run.say("profiling staging and verification of one session")
    session = tree.sessions[0]
    files = tree.files // len(tree.sessions)
    target = run.out / "profile-session"
    stage_profile, verify_profile = run.work / "stage.pyisession", run.work / "verify.pyisession"
    warm_cache(tree)
    measure(profile_command(stage_command(session, run.profile, target, 1), stage_profile),
            log=run.logs / "profile-stage.log")
    (target / "reports").mkdir()
    measure(profile_command(verify_command(session, run.profile, target, target / "reports", 1,
                                           run.verify_takes_threads, OCR_OFF),
                            verify_profile),
            log=run.logs / "profile-verify.log")
    run.trash.discard(target)
    run.results.profiles[:0] = [
        (f"Staging one session ({files} files, `--threads 1`, pyinstrument)",
         render_profile(stage_profile)),
        (f"Verification of the same session, OCR off ({files} files, `--threads 1`, "
         "pyinstrument)", render_profile(verify_profile)),
    ]
    return Hotspots(stage_profile, verify_profile)
