"""De-identify a tree of sessions with flywheel-migration, as ``fw import`` does it.

Runs inside the benchmark's own virtual environment (flywheel-migration pins pandas 2, this
project uses pandas 3): one process, one core, every file through
``DeIdProfile.process_file(src_fs, path, dst_fs)``. Each session folder below ``source`` is
written to the same-named folder below ``target`` (flat ``{SOPInstanceUID}.{Modality}.dcm``
files, the engine's default names). Prints one JSON line: files offered, files written, seconds.

    python fwmig_driver.py PROFILE.yaml SOURCE_ROOT TARGET_ROOT
"""

import json
import sys
import time
import warnings
from pathlib import Path


def main(profile_path: str, source_root: str, target_root: str) -> None:
    started = time.perf_counter()
    warnings.simplefilter("ignore")  # pydicom's value warnings, once per file, would dominate
    from flywheel_migration.deidentify import load_profile
    from fs.osfs import OSFS

    profile = load_profile(profile_path)
    imported = time.perf_counter()
    offered = 0
    for session in sorted(path for path in Path(source_root).iterdir() if path.is_dir()):
        source_fs = OSFS(str(session))
        target_fs = OSFS(str(Path(target_root) / session.name), create=True)
        for path in sorted(source_fs.walk.files()):
            # process_file returns False even when it wrote the file (13.10.11 passes the
            # callback's result through a function that returns None): count outputs below.
            profile.process_file(source_fs, path.lstrip("/"), target_fs)
            offered += 1
        source_fs.close()
        target_fs.close()
    finished = time.perf_counter()
    written = sum(1 for path in Path(target_root).rglob("*") if path.is_file())
    print(json.dumps({"files": offered, "written": written,
                      "seconds_total": finished - started,
                      "seconds_files": finished - imported}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
