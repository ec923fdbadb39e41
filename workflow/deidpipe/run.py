"""The run as a whole: recover the folder after a run that was killed.

Snakemake's lock (``.snakemake/locks``) stays behind when a run is killed (SIGKILL, a node that
lost power), and every later run then refuses until someone runs ``--unlock``. We record which
process owns the run; a lock whose owner is gone from this host is stale and is removed, so the
next run simply finishes the work. A lock held by a live run is left alone: Snakemake then
refuses the second run with its own message.
"""

import json
import os
import socket
from pathlib import Path

from deidpipe.files import write_json

OWNER_FILE = "deidpipe-run.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def take_over_stale_lock(snakemake_dir: str | Path, record_owner: bool) -> str | None:
    """Remove Snakemake's lock if the run that took it is dead; note this process as owner.

    Returns a message for the console when a stale lock was removed, else None.
    """
    snakemake_dir = Path(snakemake_dir)
    lock_files = sorted((snakemake_dir / "locks").glob("*"))
    owner_path = snakemake_dir / OWNER_FILE
    message = None
    if lock_files:
        try:
            owner = json.loads(owner_path.read_text(encoding="utf-8"))
            pid, host = int(owner["pid"]), str(owner["host"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # unknown owner: leave the decision to Snakemake (and the user)
        if host != socket.gethostname() or _alive(pid):
            return None
        for lock_file in lock_files:
            lock_file.unlink(missing_ok=True)
        message = (f"An earlier run (process {pid}) was killed before it finished; its lock was "
                   "removed and its unfinished jobs are done again now.")
    if record_owner:
        write_json(owner_path, {"pid": os.getpid(), "host": socket.gethostname()})
    return message
