"""The manifest: staging's record of one session, which verification and upload trust.

It lists every source file as staged (with its staged name, SOPInstanceUID, sha256 and size),
skipped or an error, and names the source folder, the profile and the engine. It lies in
staging beside the staged folder it stands for (deidpipe.paths), because source paths and
folder names can hold names. Written and read here only; the JSON layout is the contract.
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deidpipe.files import read_json, write_json


@dataclass(frozen=True)
class StagedFile:
    source: str  # path below the source folder
    staged: str  # path below the staged folder: '{acquisition}/{SOPInstanceUID}.{Modality}.dcm'
    sop_instance_uid: str
    sha256: str
    bytes: int
    note: str = ""  # what staging had to do to the file (a standard header, inflated), if any


@dataclass(frozen=True)
class SkippedFile:
    source: str
    reason: str


@dataclass(frozen=True)
class FileError:
    source: str
    error: str  # in words, never a value


@dataclass
class Manifest:
    source_dir: str
    profile: dict[str, str]  # file, sha256, version
    engine: str
    files: list[StagedFile] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {"staged": len(self.files), "skipped": len(self.skipped),
                "error": len(self.errors)}

    def as_json(self) -> dict[str, Any]:
        return {
            "source_dir": self.source_dir, "profile": self.profile, "engine": self.engine,
            "counts": self.counts,
            "files": [{key: value for key, value in asdict(staged).items()
                       if key != "note" or value} for staged in self.files],
            "skipped": [asdict(skipped) for skipped in self.skipped],
            "errors": [asdict(error) for error in self.errors],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Manifest":
        # Manifests of older versions do not name the source folder ('').
        return cls(source_dir=data.get("source_dir", ""), profile=data["profile"],
                   engine=data.get("engine", ""),
                   files=[StagedFile(**entry) for entry in data["files"]],
                   skipped=[SkippedFile(**entry) for entry in data["skipped"]],
                   errors=[FileError(**entry) for entry in data["errors"]])


def write_manifest(path: str | Path, manifest: Manifest) -> None:
    write_json(path, manifest.as_json())


def read_manifest(path: str | Path) -> Manifest:
    return Manifest.from_json(read_json(path))
