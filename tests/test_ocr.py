"""OCR of burned-in text: every photometric kind and compression the pipeline meets, read the
way a viewer shows it; damaged images are a plain error; nothing is downloaded."""

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate

from deidpipe.identifiers import normalise, ocr_fold
from deidpipe.ocr import (
    PixelDecodeError,
    frames_to_read,
    read_text,
    thumbnail_png,
    viewable_frames,
)
from deidpipe.synthetic import FAKE_IDENTIFIERS
from deidpipe.synthetic_images import KINDS, image_dataset

TEXT = [(8, 8, "TESTPERSON ALICE"), (8, 230, "MRN40417723")]


def written(dataset: pydicom.Dataset) -> pydicom.Dataset:
    """The data set as a file would give it back (the pipeline reads files)."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def recognised(image: np.ndarray) -> str:
    """What OCR read, folded the way the matcher folds it (confusions and separators)."""
    return ocr_fold(normalise(" ".join(box.text for box in read_text(image))))


@pytest.mark.parametrize("kind", KINDS)
def test_text_burned_into_each_kind_is_read(kind):
    dataset = written(image_dataset(kind, TEXT, patient=FAKE_IDENTIFIERS, uid_seed=kind,
                                    frames=3, text_frame=1))
    frames = int(dataset.get("NumberOfFrames") or 1)
    images = viewable_frames(dataset, frames_to_read(frames))
    assert all(image.dtype == np.uint8 for image in images)
    with_text = images[1] if frames > 1 else images[0]
    text = recognised(with_text)
    assert ocr_fold("testperson") in text and ocr_fold("mrn40417723") in text, text


def test_multi_frame_text_is_found_on_its_frame_only():
    dataset = written(image_dataset("MR_MULTIFRAME", TEXT, patient=FAKE_IDENTIFIERS,
                                    uid_seed="mf", frames=5, text_frame=2))
    assert frames_to_read(5) == [0, 2, 4]
    first, middle, last = viewable_frames(dataset, [0, 2, 4])
    assert ocr_fold("mrn40417723") in recognised(middle)
    assert ocr_fold("mrn40417723") not in recognised(first) + recognised(last)


def test_monochrome1_is_inverted_for_display():
    dataset = written(image_dataset("MONOCHROME1", [], patient={}, uid_seed="m1"))
    image = viewable_frames(dataset, [0])[0]
    stored = dataset.pixel_array
    # Stored high values (dark on a MONOCHROME1 display) come out dark.
    assert image[stored == stored.max()].mean() < image[stored == stored.min()].mean()


@pytest.mark.parametrize("kind", ["MR", "CT", "US"])
def test_images_without_text_give_no_text(kind):
    dataset = written(image_dataset(kind, [], patient=FAKE_IDENTIFIERS, uid_seed="clean"))
    boxes = read_text(viewable_frames(dataset, [0])[0])
    assert sum(len(normalise(box.text)) for box in boxes) < 3, boxes


def test_damaged_compressed_image_is_a_plain_error():
    dataset = written(image_dataset("US_YBR", TEXT, patient={}, uid_seed="cut"))
    dataset.PixelData = encapsulate([b"\xff\xd8\xff\xdb" + bytes(40)])  # a broken JPEG
    with pytest.raises(PixelDecodeError, match="cannot be decoded"):
        viewable_frames(dataset, [0])


def test_a_file_without_pixel_data_is_a_plain_error():
    dataset = written(image_dataset("MR", [], patient={}, uid_seed="none"))
    del dataset.PixelData
    with pytest.raises(PixelDecodeError, match="no image data"):
        viewable_frames(dataset, [0])


@pytest.mark.parametrize("frames, sample, expected", [
    (1, ("first", "middle", "last"), [0]), (2, ("first", "middle", "last"), [0, 1]),
    (3, ("first", "middle", "last"), [0, 1, 2]), (10, ("first", "middle", "last"), [0, 4, 9]),
    (10, ("middle",), [4]), (0, ("first",), [])])
def test_frames_to_read(frames, sample, expected):
    assert frames_to_read(frames, sample) == expected


def test_thumbnail_is_a_small_png_with_the_boxes_drawn():
    dataset = written(image_dataset("CT", TEXT, patient={}, uid_seed="thumb", size=512))
    image = viewable_frames(dataset, [0])[0]
    boxes = read_text(image)
    picture = Image.open(io.BytesIO(thumbnail_png(image, boxes)))
    assert picture.format == "PNG" and max(picture.size) == 256
    red = np.array(picture.convert("RGB"))
    assert ((red[..., 0] == 255) & (red[..., 1] == 0)).any()  # the outlines


def test_ocr_runs_without_network_or_cache(tmp_path):
    """A fresh process with every socket refused and an empty home reads text: the models
    ship inside the package."""
    image = tmp_path / "image.npy"
    dataset = written(image_dataset("SC", TEXT, patient={}, uid_seed="net"))
    np.save(image, viewable_frames(dataset, [0])[0])
    script = (
        "import socket, sys, numpy\n"
        "def refuse(*args, **kwargs):\n"
        "    raise OSError('network refused by the test')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "from deidpipe.ocr import read_text\n"
        f"print(' '.join(box.text for box in read_text(numpy.load({str(image)!r}))))\n")
    environment = {**os.environ, "HOME": str(tmp_path / "home"),
                   "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=environment, timeout=300, check=True)
    assert ocr_fold("mrn40417723") in ocr_fold(normalise(result.stdout)), result
    assert result.stderr.strip() == "", result.stderr
    assert not Path(tmp_path / "home").exists()  # nothing fetched into a cache


def test_ocr_prints_nothing(capfd):
    dataset = written(image_dataset("MR", TEXT, patient={}, uid_seed="quiet"))
    read_text(viewable_frames(dataset, [0])[0])
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""
