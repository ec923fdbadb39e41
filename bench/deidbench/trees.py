"""Synthetic trees of scanner-sized DICOM sessions, cached on disk between runs.

Each session holds two MR series and a CT series, built by ``deidpipe.synthetic`` (the demo's
builder: pydicom's MR_small.dcm and CT_small.dcm with made-up identifiers planted) with the
pixel data enlarged to scanner sizes: the image is scaled up (nearest neighbour) to the rows
and columns below and PixelData grown to match, so every file is valid DICOM that pydicom reads
back. One template file is built per series; every file of the tree is a copy of it with its
own study, series and instance UIDs written over placeholders of the same length, so a tree of
thousands of files is written in seconds and is the same bytes on every run.

Also here: reading a tree once so that measurements start with it in the page cache, and the
trash that finished folders are moved into (nothing is deleted while measuring).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from deidbench.processes import MB

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

TREE_FORMAT = "4"  # bump when the tree's layout or files change (invalidates cached trees)
UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's documented example root (as the demo)


@dataclass(frozen=True)
class SeriesLayout:
    """One series of every session: a pydicom test file scaled up to ``rows`` × ``columns``."""

    template: str
    description: str
    rows: int
    columns: int


# Shares of a session's files: half, a quarter, a quarter (see ``series_sizes``).
SESSION_SERIES = (
    SeriesLayout("MR_small.dcm", "T1w MPRAGE", 256, 256),
    SeriesLayout("MR_small.dcm", "T2w FLAIR", 512, 512),
    SeriesLayout("CT_small.dcm", "CT head", 512, 512),
)


def series_sizes(files: int) -> list[int]:
    """How a session's files are spread over SESSION_SERIES: half, a quarter, a quarter."""
    quarter = files // 4
    return [files - 2 * quarter, quarter, quarter]


def bench_uid(kind: int, tree: int, session: int, series: int, instance: int) -> str:
    """A UID of fixed length: a template's placeholder is replaced in place, byte for byte.
    Every component starts with 1, so none has a leading zero."""
    return f"{UID_ROOT}77.{kind}.1{tree:03d}.1{session:06d}.1{series:02d}.1{instance:07d}"


def enlarged_pixels(rows: int, columns: int) -> Callable[[Dataset], None]:
    """A plant for ``deidpipe.synthetic.SeriesSpec``: scale the image up to ``rows`` ×
    ``columns`` (nearest neighbour, same pixel type) and the pixel spacing down to match."""
    import numpy as np

    def enlarge(dataset: Dataset) -> None:
        pixels = dataset.pixel_array
        old_rows, old_columns = pixels.shape
        larger = pixels[(np.arange(rows) * old_rows) // rows][
            :, (np.arange(columns) * old_columns) // columns]
        spacing = dataset.get("PixelSpacing")
        if spacing:
            dataset.PixelSpacing = [f"{float(spacing[0]) * old_rows / rows:.6g}",
                                    f"{float(spacing[1]) * old_columns / columns:.6g}"]
        dataset.Rows, dataset.Columns = rows, columns
        dataset.PixelData = np.ascontiguousarray(larger).tobytes()

    return enlarge


@dataclass
class Template:
    """One series' template file and what it is."""

    layout: SeriesLayout
    data: bytes

    def describe(self) -> str:
        return (f"{self.layout.description}: {self.layout.template} scaled to "
                f"{self.layout.rows}×{self.layout.columns}, {len(self.data) / 1000:.0f} kB "
                "a file")


def build_templates(work: Path) -> list[Template]:
    """One DICOM file per series of SESSION_SERIES, made by deidpipe.synthetic with enlarged
    pixel data and placeholder UIDs that ``write_session`` replaces per file."""
    from pydicom import dcmread
    from pydicom.filebase import DicomBytesIO

    from deidpipe.synthetic import SeriesSpec, SessionSpec, build_session

    spec = SessionSpec("bench-template", [
        SeriesSpec(layout.template, layout.description, 1,
                   plant=enlarged_pixels(layout.rows, layout.columns))
        for layout in SESSION_SERIES])
    folder = work / "template"
    shutil.rmtree(folder, ignore_errors=True)
    paths = build_session(spec, folder)
    templates = []
    for series, (layout, path) in enumerate(zip(SESSION_SERIES, paths, strict=True), start=1):
        dataset = dcmread(path)
        dataset.StudyInstanceUID = bench_uid(1, 0, 0, 0, 0)
        dataset.SeriesInstanceUID = bench_uid(2, 0, 0, series, 0)
        dataset.SOPInstanceUID = bench_uid(3, 0, 0, series, 0)
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        buffer = DicomBytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        data = buffer.getvalue()
        for placeholder, count in ((bench_uid(1, 0, 0, 0, 0), 1),
                                   (bench_uid(2, 0, 0, series, 0), 1),
                                   (bench_uid(3, 0, 0, series, 0), 2)):
            found = data.count(placeholder.encode())
            if found != count:
                raise RuntimeError(f"template {path.name}: placeholder found {found} times")
        check_readable(data, layout)
        templates.append(Template(layout, data))
    shutil.rmtree(folder)
    return templates


def check_readable(data: bytes, layout: SeriesLayout) -> None:
    """pydicom reads the file back, pixels included, at the size it was made."""
    from pydicom import dcmread
    from pydicom.filebase import DicomBytesIO

    shape = dcmread(DicomBytesIO(data)).pixel_array.shape
    if shape != (layout.rows, layout.columns):
        raise RuntimeError(f"template {layout.description}: pixels read back as {shape}")


def write_session(templates: list[Template], session_dir: Path, tree: int, session: int,
                  files: int) -> None:
    study = bench_uid(1, tree, session, 0, 0).encode()
    for series, (template, count) in enumerate(zip(templates, series_sizes(files), strict=True),
                                               start=1):
        if not count:
            continue
        series_dir = session_dir / f"series{series:02d}"
        series_dir.mkdir(parents=True)
        with_series = template.data.replace(bench_uid(1, 0, 0, 0, 0).encode(), study).replace(
            bench_uid(2, 0, 0, series, 0).encode(), bench_uid(2, tree, session, series, 0).encode())
        placeholder = bench_uid(3, 0, 0, series, 0).encode()
        for instance in range(1, count + 1):
            data = with_series.replace(placeholder,
                                       bench_uid(3, tree, session, series, instance).encode())
            (series_dir / f"IM{instance:05d}.dcm").write_bytes(data)


@dataclass
class Tree:
    root: Path
    sessions: list[Path]
    files: int
    bytes: int

    @property
    def mb(self) -> float:
        return self.bytes / MB


def build_tree(trees: Path, templates: Callable[[], list[Template]], name: str, tree_id: int,
               sessions: int, files: int) -> Tree:
    """``sessions`` session folders of ``files`` DICOM files each, cached by name and size."""
    root = trees / f"{name}-{sessions}x{files}"
    marker = root / ".complete"
    if not (marker.is_file() and marker.read_text() == TREE_FORMAT):
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        for session in range(1, sessions + 1):
            write_session(templates(), root / f"sub-{session:05d}_ses-01", tree_id, session, files)
        marker.write_text(TREE_FORMAT)
    session_dirs = sorted(path for path in root.iterdir() if path.is_dir())
    all_files = list(root.rglob("*.dcm"))
    return Tree(root, session_dirs, len(all_files),
                sum(path.stat().st_size for path in all_files))


def warm_cache(*trees: Tree) -> None:
    """Write out what earlier steps left unwritten (so that no measurement waits for another's
    write-back), then read every file once: each measurement starts with the trees in the page
    cache."""
    os.sync()
    for tree in trees:
        for path in tree.root.rglob("*.dcm"):
            with open(path, "rb") as handle:
                while handle.read(1 << 20):
                    pass


class Trash:
    """Folders to delete when the run is over, moved aside meanwhile.

    ext4 does not reuse an inode deleted in the last one to five minutes: creating a file scans
    past every such inode of the folder's block group (``recently_deleted`` in the inode
    allocator). Deleting a tree of thousands of files therefore makes every file created nearby
    in the next minutes slow (here up to ~0.7 ms per file instead of ~0.03 ms, which swamps
    ``cp -r``). So nothing is deleted while measuring: a folder in the way is renamed into
    ``trash/`` (a rename deletes no inode) and the trash is emptied at the end.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    def discard(self, path: Path) -> None:
        if path.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            self.count += 1
            path.rename(self.folder / f"{self.count:04d}-{path.name}")

    def empty(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
