"""Stage one session: apply the profile with Flywheel's engine and write the de-identified copy.

The staged tree is what ``fw import --output-folder`` writes below the session: one folder per
acquisition, files named ``{SOPInstanceUID}.{Modality}.dcm``. Staging writes into a temporary
sibling folder and renames it into place, so an interrupted run never leaves a staged session
that looks finished. The source files are only ever opened for reading.
"""

import hashlib
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from fw_file_rs.dcm import Context, is_dicom_part10

from deidpipe.files import (
    OWNER_ONLY_FILE,
    make_private_dir,
    sha256_file,
    write_json,
)
from deidpipe.profile import load_profile

# Tags the engine must report for naming (parse_header returns only included tags plus its
# defaults; see the fw-file-rs 0.9.1 note in the README).
NAMING_TAGS = ["SOPInstanceUID", "Modality", "SeriesInstanceUID", "SeriesNumber",
               "SeriesDescription"]
DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}
UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
UNSAFE_IN_NAME = re.compile(r"[\x00-\x1f/\\]")
COPY_CHUNK = 1 << 20


@dataclass
class FileOutcome:
    """What happened to one source file."""

    source: str
    kind: str  # "staged", "skipped" or "error"
    detail: str = ""
    staged: str = ""
    sop_instance_uid: str = ""
    acquisition_uid: str = ""
    sha256: str = ""
    size: int = 0


def engine_version() -> str:
    return f"fw-file-rs {version('fw-file-rs')}"


def make_engine(profile_text: str) -> Context:
    return Context().deid_profile(profile_text).include_tags(NAMING_TAGS)


def list_source_files(dicom_dir: Path) -> tuple[list[Path], list[FileOutcome]]:
    """Every regular file below ``dicom_dir`` (sorted), and the entries that are not followed."""
    files: list[Path] = []
    not_followed: list[FileOutcome] = []
    for folder, subfolders, names in os.walk(dicom_dir, followlinks=False):
        subfolders.sort()
        for name in sorted(names + [sub for sub in subfolders
                                    if os.path.islink(os.path.join(folder, sub))]):
            path = Path(folder, name)
            relative = path.relative_to(dicom_dir).as_posix()
            if path.is_symlink():
                not_followed.append(FileOutcome(relative, "skipped",
                                                "symbolic link (links are not followed)"))
            elif path.is_file():
                files.append(path)
            else:
                not_followed.append(FileOutcome(relative, "skipped", "not a regular file"))
    return files, not_followed


def acquisition_folder_name(label: str) -> str:
    """A folder name for an acquisition label: same text, minus what a path cannot hold."""
    name = UNSAFE_IN_NAME.sub("_", label).strip()
    return name if name not in ("", ".", "..") else "acquisition"


def _engine_message(error: Exception) -> str:
    # Engine messages describe structure, not values; keep the first line, bounded.
    return str(error).splitlines()[0][:200] if str(error) else type(error).__name__


def deidentify_file(engine: Context, source: Path, relative: str, target: Path) -> FileOutcome:
    """De-identify one file into ``target`` (a temporary name); classify what it was."""
    if source.name.upper() == "DICOMDIR":
        return FileOutcome(relative, "skipped",
                           "DICOMDIR index file (holds patient names; no image needs it)")
    try:
        looks_like_dicom = is_dicom_part10(str(source))
    except OSError as error:
        return FileOutcome(relative, "error", f"cannot be read ({error.strerror})")
    if not looks_like_dicom:
        if source.suffix.lower() in DICOM_SUFFIXES:
            return FileOutcome(relative, "error",
                               "named like a DICOM file but is not a readable DICOM file")
        return FileOutcome(relative, "skipped", "not a DICOM file")
    try:
        header = bytes(engine.read_until_pixels(str(source)))
        deidentified_header = bytes(engine.deid_header(header))
        fields = engine.parse_header(deidentified_header)
    except (ValueError, RuntimeError, OSError) as error:
        return FileOutcome(relative, "error",
                           f"not a readable DICOM file: {_engine_message(error)}")
    sop_instance_uid = str(fields.get("SOPInstanceUID") or "")
    if not UID_PATTERN.match(sop_instance_uid):
        return FileOutcome(relative, "error", "has no valid SOPInstanceUID (0008,0018)")
    modality = str(fields.get("Modality") or "")
    file_name = f"{sop_instance_uid}.{modality}.dcm" if modality else f"{sop_instance_uid}.dcm"
    meta = engine.get_fw_meta(fields)
    label = acquisition_folder_name(str(meta.get("acquisition.label") or ""))
    digest = hashlib.sha256(deidentified_header)
    size = len(deidentified_header)
    with open(source, "rb") as reader, open(
            os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER_ONLY_FILE), "wb") as writer:
        writer.write(deidentified_header)
        reader.seek(len(header))
        while chunk := reader.read(COPY_CHUNK):
            writer.write(chunk)
            digest.update(chunk)
            size += len(chunk)
    return FileOutcome(relative, "staged", staged=f"{label}/{file_name}",
                       sop_instance_uid=sop_instance_uid,
                       acquisition_uid=str(meta.get("acquisition.uid") or ""),
                       sha256=digest.hexdigest(), size=size)


def _place_files(work_dir: Path, outcomes: list[FileOutcome]) -> None:
    """Move staged files from their temporary names into acquisition folders.

    Two series that Flywheel would label alike get separate folders (``label``, ``label_2``);
    two files with one SOPInstanceUID are an error, since Flywheel would keep only one.
    """
    folder_of_series: dict[tuple[str, str], str] = {}
    used_folders: set[str] = set()
    staged_by_name: dict[str, FileOutcome] = {}
    for index, outcome in enumerate(outcomes):
        if outcome.kind != "staged":
            continue
        label, file_name = outcome.staged.split("/", 1)
        key = (label, outcome.acquisition_uid)
        if key not in folder_of_series:
            folder, counter = label, 1
            while folder in used_folders:
                counter += 1
                folder = f"{label}_{counter}"
            folder_of_series[key] = folder
            used_folders.add(folder)
        staged = f"{folder_of_series[key]}/{file_name}"
        temporary = work_dir / f".{index}.part"
        if staged in staged_by_name:
            temporary.unlink()
            first = staged_by_name[staged]
            outcomes[index] = FileOutcome(
                outcome.source, "error",
                f"has the same SOPInstanceUID as {first.source}; Flywheel would keep one")
            continue
        make_private_dir(work_dir / folder_of_series[key])
        os.replace(temporary, work_dir / staged)
        outcome.staged = staged
        staged_by_name[staged] = outcome


def _replace_dir(work_dir: Path, staged_session_dir: Path) -> None:
    """Rename the finished work folder into place, replacing an older staged copy."""
    old = staged_session_dir.with_name(f".{staged_session_dir.name}.old-{os.getpid()}")
    if staged_session_dir.exists():
        os.replace(staged_session_dir, old)
    os.replace(work_dir, staged_session_dir)
    shutil.rmtree(old, ignore_errors=True)


def stage_session(
    dicom_dir: str | Path,
    profile_path: str | Path,
    staged_session_dir: str | Path,
    manifest_path: str | Path,
    threads: int = 1,
) -> dict[str, Any]:
    """Stage every file below ``dicom_dir``; write the staged folder and the manifest."""
    dicom_dir = Path(dicom_dir)
    staged_session_dir = Path(staged_session_dir)
    profile_text = Path(profile_path).read_text(encoding="utf-8")
    engine = make_engine(profile_text)
    sources, outcomes = list_source_files(dicom_dir)
    make_private_dir(staged_session_dir.parent)
    work_dir = staged_session_dir.with_name(f".{staged_session_dir.name}.staging-{os.getpid()}")
    shutil.rmtree(work_dir, ignore_errors=True)
    make_private_dir(work_dir)
    try:
        def stage_one(item: tuple[int, Path]) -> FileOutcome:
            index, source = item
            relative = source.relative_to(dicom_dir).as_posix()
            return deidentify_file(engine, source, relative, work_dir / f".{index}.part")

        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            file_outcomes = list(pool.map(stage_one, enumerate(sources)))
        _place_files(work_dir, file_outcomes)
        _replace_dir(work_dir, staged_session_dir)
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    outcomes = sorted(outcomes + file_outcomes, key=lambda outcome: outcome.source)
    manifest = {
        "profile": {"file": Path(profile_path).name, "sha256": sha256_file(profile_path),
                    "version": load_profile(profile_path).version},
        "engine": engine_version(),
        "counts": {kind: sum(outcome.kind == kind for outcome in outcomes)
                   for kind in ("staged", "skipped", "error")},
        "files": [{"source": o.source, "staged": o.staged, "sop_instance_uid": o.sop_instance_uid,
                   "sha256": o.sha256, "bytes": o.size}
                  for o in outcomes if o.kind == "staged"],
        "skipped": [{"source": o.source, "reason": o.detail}
                    for o in outcomes if o.kind == "skipped"],
        "errors": [{"source": o.source, "error": o.detail}
                   for o in outcomes if o.kind == "error"],
    }
    write_json(manifest_path, manifest)
    return manifest
