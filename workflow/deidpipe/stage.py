"""Stage one session: apply the profile with Flywheel's engine and write the de-identified copy.

The staged tree is what ``fw import --output-folder`` writes below the session: one folder per
acquisition, files named ``{SOPInstanceUID}.{Modality}.dcm``. Staging writes into a temporary
sibling folder and renames it into place, so an interrupted run never leaves a staged session
that looks finished. The source files are only ever opened for reading.

Before the engine sees a file, every element of it is walked by tag and length, so that a file
cut short or damaged is listed as an error instead of being staged broken. fw-file-rs reads only
standard files (preamble, 'DICM', complete file meta, a data set that is not deflated): a file
without that header (old PACS exports write the data set alone) or with a deflated data set is
given a standard copy in the work folder, same data set bytes (inflated), which the engine then
reads; the manifest notes it. Error messages describe what is wrong in words and never quote a
value: fw-file-rs's own messages can (a damaged transfer syntax swallows the elements after it).
"""

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any, BinaryIO

from fw_file_rs.dcm import Context

from deidpipe.dicom.header import inflate, standard_header
from deidpipe.dicom.reader import (
    COPY_CHUNK,
    INFLATED_SYNTAX,
    RECOPY_ADVICE,
    UID_PATTERN,
    Buffer,
    Container,
    Unstageable,
    mapped,
    read_container,
    transfer_syntax_name,
    walk_structure,
)
from deidpipe.files import (
    OWNER_ONLY_FILE,
    make_private_dir,
    sha256_file,
)
from deidpipe.manifest import FileError, Manifest, SkippedFile, StagedFile, write_manifest
from deidpipe.parallel import map_in_workers
from deidpipe.profile import load_profile

# Tags the engine must report for naming (parse_header returns only included tags plus its
# defaults; see the fw-file-rs 0.9.1 note in the README).
NAMING_TAGS = ["SOPInstanceUID", "Modality", "SeriesInstanceUID", "SeriesNumber",
               "SeriesDescription"]
DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}
UNSAFE_IN_NAME = re.compile(r"[\x00-\x1f/\\]")


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


@dataclass
class EngineInput:
    """The file the engine reads (the source, or a standard copy of it in the work folder)."""

    path: Path
    image_offset: int
    note: str = ""


def _copy_from(data: Buffer, start: int, writer: BinaryIO, digest: Any = None) -> int:
    """Write ``data`` from ``start`` to its end in chunks (memory stays bounded for large
    files); feed ``digest`` too. Returns the bytes written."""
    for offset in range(start, len(data), COPY_CHUNK):
        chunk = data[offset:offset + COPY_CHUNK]
        writer.write(chunk)
        if digest is not None:
            digest.update(chunk)
    return max(0, len(data) - start)



def prepare_input(source: Path, data: Buffer, container: Container,
                  work_copy: Path) -> EngineInput:
    """Check the file's structure; for a file without a standard DICOM file header write a
    standard copy (same data set bytes) for the engine, which reads only standard files."""
    if container.standard:
        structure = walk_structure(data, container, container.dataset_offset)
        return EngineInput(source, structure.image_offset)
    with tempfile.TemporaryFile(dir=work_copy.parent) as body:
        if container.transfer_syntax in INFLATED_SYNTAX:
            inflate(data, container.dataset_offset, body)
            transfer_syntax = INFLATED_SYNTAX[container.transfer_syntax]
            note = ("the source is compressed as a whole (deflated transfer syntax); the staged "
                    f"copy holds the same data uncompressed "
                    f"({transfer_syntax_name(transfer_syntax)})")
        else:
            _copy_from(data, container.dataset_offset, body)
            transfer_syntax = container.transfer_syntax
            note = ("the source has no standard DICOM file header (128-byte preamble, 'DICM', "
                    "complete file meta); the staged copy has one, the data set is unchanged")
        body.flush()
        with mapped(body) as body_data:
            structure = walk_structure(body_data, replace(container, transfer_syntax=(
                transfer_syntax)), 0)
            header = standard_header(container, transfer_syntax, structure)
            with open(os.open(work_copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                              OWNER_ONLY_FILE), "wb") as writer:
                writer.write(header)
                _copy_from(body_data, 0, writer)
    return EngineInput(work_copy, len(header) + structure.image_offset, note)


def _engine_failure(error: BaseException, transfer_syntax: str) -> str:
    """A description of an engine error without its text: engine messages quote values (a
    damaged transfer syntax element, say, swallows the elements after it)."""
    text = str(error)
    if "Unsupported transfer syntax" in text:
        name = transfer_syntax_name(transfer_syntax)
        which = f" ({name})" if name else " (an unknown one)"
        return (f"uses an encoding (transfer syntax){which} that Flywheel's de-identification "
                "engine cannot read")
    if "No elements found" in text:
        return ("Flywheel's de-identification engine finds no readable elements in it "
                "(a damaged header, or an encoding the engine cannot read)")
    return "Flywheel's de-identification engine cannot read its header (the file is damaged)"


def _is_engine_error(error: BaseException) -> bool:
    # The engine is Rust: a panic arrives as pyo3's PanicException, a BaseException.
    return isinstance(error, Exception) or type(error).__name__ == "PanicException"


def deidentify_file(engine: Context, source: Path, relative: str, target: Path) -> FileOutcome:
    """De-identify one file into ``target`` (a temporary name); classify what it was.

    A file that cannot be staged is an "error" outcome whose message names the problem and
    never a value. A failure to write into the staging folder (a full disk) is raised: it fails
    the session, not the file.
    """
    if source.name.upper() == "DICOMDIR":
        return FileOutcome(relative, "skipped",
                           "DICOMDIR index file (holds patient names; no image needs it)")
    try:
        handle = open(source, "rb")  # noqa: SIM115 (closed below)
    except OSError as error:
        return FileOutcome(relative, "error", "cannot be read"
                           + (f" ({error.strerror})" if error.strerror else "")
                           + ": check that the file is still there and that you may read it")
    work_copy = target.with_suffix(".source")
    try:
        with handle:
            return _deidentify(engine, source, relative, target, handle, work_copy)
    except Unstageable as error:
        target.unlink(missing_ok=True)
        return FileOutcome(relative, "error", str(error))
    finally:
        work_copy.unlink(missing_ok=True)


def _deidentify(engine: Context, source: Path, relative: str, target: Path, handle: BinaryIO,
                work_copy: Path) -> FileOutcome:
    named_dicom = source.suffix.lower() in DICOM_SUFFIXES
    with mapped(handle) as data:
        if not data:
            if named_dicom:
                raise Unstageable("is empty (0 bytes); " + RECOPY_ADVICE)
            return FileOutcome(relative, "skipped", "not a DICOM file (empty)")
        container = read_container(data)
        if container is None:
            if named_dicom:
                raise Unstageable("is named like a DICOM file but is not one (it may be a "
                                  "report, a text file or a damaged copy)")
            return FileOutcome(relative, "skipped", "not a DICOM file")
        engine_input = prepare_input(source, data, container, work_copy)
        if engine_input.path == source:
            return _write_staged(engine, relative, target, engine_input, container, data)
    with open(engine_input.path, "rb") as work_handle, mapped(work_handle) as work_data:
        return _write_staged(engine, relative, target, engine_input, container, work_data)


def _write_staged(engine: Context, relative: str, target: Path, engine_input: EngineInput,
                  container: Container, data: Buffer) -> FileOutcome:
    """Apply the profile to the header and write the staged file: the de-identified header,
    then the engine input's bytes from the pixel data on, unchanged."""
    try:
        header = bytes(engine.read_until_pixels(str(engine_input.path)))
        deidentified_header = bytes(engine.deid_header(header))
        fields = engine.parse_header(deidentified_header)
        meta = engine.get_fw_meta(fields)
    except BaseException as error:
        if not _is_engine_error(error):
            raise
        raise Unstageable(_engine_failure(error, container.transfer_syntax)) from None
    if len(header) != engine_input.image_offset:
        raise Unstageable("is damaged or unusual: Flywheel's de-identification engine and the "
                          "structure check disagree on where its image data starts; ask the "
                          "data team to look at it")
    sop_instance_uid = str(fields.get("SOPInstanceUID") or "")
    if not UID_PATTERN.match(sop_instance_uid):
        raise Unstageable("has no valid SOPInstanceUID (0008,0018), the image's unique "
                          "identifier, so it can be neither named nor uploaded; if it is an "
                          "image, " + RECOPY_ADVICE)
    modality = str(fields.get("Modality") or "")
    file_name = f"{sop_instance_uid}.{modality}.dcm" if modality else f"{sop_instance_uid}.dcm"
    label = acquisition_folder_name(str(meta.get("acquisition.label") or ""))
    digest = hashlib.sha256(deidentified_header)
    with open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER_ONLY_FILE),
              "wb") as writer:
        writer.write(deidentified_header)
        size = len(deidentified_header) + _copy_from(data, len(header), writer, digest)
    return FileOutcome(relative, "staged", detail=engine_input.note,
                       staged=f"{label}/{file_name}", sop_instance_uid=sop_instance_uid,
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


# ---- the engine in worker processes (deidpipe.parallel) ----------------------------------

_worker_engine: Context | None = None


def _start_worker(profile_text: str) -> None:
    global _worker_engine
    _worker_engine = make_engine(profile_text)


def _stage_in_worker(job: tuple[str, str, str]) -> FileOutcome:
    source, relative, target = job
    assert _worker_engine is not None
    return deidentify_file(_worker_engine, Path(source), relative, Path(target))


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
    make_engine(profile_text)  # a profile the engine refuses stops here, before any worker
    sources, outcomes = list_source_files(dicom_dir)
    make_private_dir(staged_session_dir.parent)
    work_dir = staged_session_dir.with_name(f".{staged_session_dir.name}.staging-{os.getpid()}")
    # A killed run leaves its work folder behind (staged copies: sensitive). Only one job
    # stages a session at a time, so every such sibling is stale.
    for stale in [*staged_session_dir.parent.glob(f".{staged_session_dir.name}.staging-*"),
                  *staged_session_dir.parent.glob(f".{staged_session_dir.name}.old-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    make_private_dir(work_dir)
    try:
        jobs = [(str(source), source.relative_to(dicom_dir).as_posix(),
                 str(work_dir / f".{index}.part")) for index, source in enumerate(sources)]
        file_outcomes = list(map_in_workers(_stage_in_worker, jobs, threads,
                                            _start_worker, (profile_text,)))
        _place_files(work_dir, file_outcomes)
        _replace_dir(work_dir, staged_session_dir)
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    outcomes = sorted(outcomes + file_outcomes, key=lambda outcome: outcome.source)
    manifest = Manifest(
        source_dir=str(dicom_dir),
        profile={"file": Path(profile_path).name, "sha256": sha256_file(profile_path),
                 "version": load_profile(profile_path).version},
        engine=engine_version(),
        files=[StagedFile(o.source, o.staged, o.sop_instance_uid, o.sha256, o.size, o.detail)
               for o in outcomes if o.kind == "staged"],
        skipped=[SkippedFile(o.source, o.detail) for o in outcomes if o.kind == "skipped"],
        errors=[FileError(o.source, o.detail) for o in outcomes if o.kind == "error"])
    write_manifest(manifest_path, manifest)
    return manifest.as_json()
