"""Runs inside flywheel-cli 17's environment: de-identify files with flywheel-migration (the
engine inside `fw import`, which that CLI ships), as `fw import --profile` would.

stdin: JSON list of file names below SOURCE; stdout: JSON {name: [written files] or "error"}.

    python fwmig_probe.py PROFILE.yaml SOURCE TARGET
"""

import json
import sys
import warnings


def main(profile_path: str, source: str, target: str) -> None:
    warnings.simplefilter("ignore")  # pydicom's value warnings
    from flywheel_migration.deidentify import load_profile
    from fs.osfs import OSFS

    names = json.loads(sys.stdin.read())
    profile = load_profile(profile_path)
    source_fs, target_fs = OSFS(source), OSFS(target, create=True)
    written: dict[str, object] = {}
    for name in names:
        before = set(target_fs.walk.files())
        try:
            profile.process_file(source_fs, name, target_fs)
        except Exception as error:  # noqa: BLE001 - reported to the test, which decides
            written[name] = f"{type(error).__name__}: {error}"[:300]
            continue
        written[name] = sorted(path.lstrip("/") for path in set(target_fs.walk.files()) - before)
    print(json.dumps(written))


if __name__ == "__main__":
    main(*sys.argv[1:4])
