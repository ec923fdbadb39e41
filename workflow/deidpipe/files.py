"""Small file helpers shared by the stages: owner-only, atomic writes and hashing."""

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

OWNER_ONLY_DIR = 0o700
OWNER_ONLY_FILE = 0o600


def make_private_dir(path: str | Path) -> Path:
    """Create a folder (and parents) readable by its owner only, whatever the umask."""
    path = Path(path)
    missing = [folder for folder in [path, *path.parents] if not folder.exists()]
    # mkdir(parents=True) would give the parents the umask's mode: create each one ourselves.
    for folder in reversed(missing):
        folder.mkdir(mode=OWNER_ONLY_DIR, exist_ok=True)
        os.chmod(folder, OWNER_ONLY_DIR)
    return path


def make_tree_owner_only(folder: str | Path) -> None:
    """Take group and others' access away from ``folder`` and everything below it (folders
    0700, files 0600; links are not followed). Snakemake makes its own folder, logs and
    metadata readable by others (its log lists every job's labels); nothing if absent."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return
    _owner_only(folder, OWNER_ONLY_DIR)
    for root, folders, files in os.walk(folder):
        for name in folders:
            _owner_only(Path(root, name), OWNER_ONLY_DIR)
        for name in files:
            _owner_only(Path(root, name), OWNER_ONLY_FILE)


def _owner_only(path: Path, mode: int) -> None:
    try:
        status = os.lstat(path)
        if not os.path.islink(path) and status.st_mode & 0o077:
            os.chmod(path, mode | (status.st_mode & 0o100 if mode == OWNER_ONLY_FILE else 0))
    except OSError:
        pass  # removed meanwhile (Snakemake's locks come and go)


def write_private_bytes(path: str | Path, data: bytes) -> None:
    """Write a file atomically (temporary name, then rename) with owner-only permissions."""
    path = Path(path)
    make_private_dir(path.parent)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(temporary, OWNER_ONLY_FILE)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, document: Any) -> None:
    """Write JSON atomically, owner-only, with stable key order."""
    text = json.dumps(document, indent=2, sort_keys=False, ensure_ascii=False) + "\n"
    write_private_bytes(path, text.encode("utf-8"))


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def files_below(folder: str | Path) -> set[str]:
    """Relative paths (with '/') of every non-folder entry below ``folder``; empty if absent."""
    folder = Path(folder)
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*")
            if not path.is_dir()}
