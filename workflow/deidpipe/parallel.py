"""Share a session's files out to worker processes.

fw-file-rs holds Python's global lock while it works, and pydicom is pure Python, so threads
would take turns: each job forks worker processes instead. A session of a few files is done in
the job's own process, since starting workers would cost more than it saves.
"""

import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
# Below this many files per worker, fewer workers are started.
FILES_PER_WORKER_MINIMUM = 8


def count_files(folder: str | Path, limit: int) -> int:
    """The regular files below ``folder`` (links not followed), counted up to ``limit``: a
    large session is not listed to its end. 0 when the folder cannot be read."""
    count = 0
    folders = [folder]
    while folders and count < limit:
        try:
            with os.scandir(folders.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        count += 1
        except OSError:
            continue
    return min(count, limit)


def map_in_workers(function: Callable[[Item], Result], items: list[Item], workers: int,
                   start: Callable[..., None], start_arguments: tuple[Any, ...] = ()
                   ) -> Iterator[Result]:
    """``map(function, items)`` over up to ``workers`` processes, each set up once with
    ``start(*start_arguments)``, results in the items' order; in this process when one worker
    is enough. Results come back as they are made, so memory does not grow with the session.
    Workers are forked: they start at once and inherit what this process has loaded."""
    workers = max(1, min(workers, len(items) // FILES_PER_WORKER_MINIMUM))
    if workers == 1:
        start(*start_arguments)
        yield from map(function, items)
        return
    chunk = max(1, min(32, len(items) // (workers * 8)))
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"),
                             initializer=start, initargs=start_arguments) as pool:
        yield from pool.map(function, items, chunksize=chunk)
