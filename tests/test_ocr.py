"""OCR of burned-in text: every photometric kind and compression the pipeline meets, read the
way a viewer shows it, at scanner sizes; clean images and harmless overlays read as what they
are; damaged images are a plain error; nothing is printed and nothing is downloaded.

What OCR read in the cases and controls is printed at the end of the module."""

import copy
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageFont
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, get_frame
from pydicom.pixels.decoders.base import Decoder
from pydicom.sequence import Sequence

from deidpipe import ocr
from deidpipe.ocr import (
    TILE_OVERLAP,
    TILE_SIDE,
    PixelDecodeError,
    engine_description,
    frames_to_read,
    read_text,
    thumbnail_png,
    viewable_frames,
)
from deidpipe.profile import generate_profile
from deidpipe.stage import stage_session
from deidpipe.synthetic import FAKE_IDENTIFIERS
from deidpipe.synthetic_images import KINDS, image_dataset, render_text

REPO = Path(__file__).resolve().parent.parent
TEXT = [(8, 8, "TESTPERSON^ALICE"), (8, 230, "MRN40417723")]
COLOUR_KINDS = {"US", "US_YBR", "PALETTE"}
# What OCR read, by case: printed when the module is done, for the record.
READ: dict[str, list[str]] = {}


@pytest.fixture(scope="module", autouse=True)
def what_ocr_read(pytestconfig):
    yield
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\nWhat OCR read (test_ocr.py):")
        for case, texts in READ.items():
            print(f"  {case}: {json.dumps(texts)}")


def written(dataset: pydicom.Dataset) -> pydicom.Dataset:
    """The data set as a file gives it back (the pipeline reads files)."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def folded(text: str) -> str:
    """Letters and digits only, upper case: no allowance for OCR's confusions."""
    return "".join(character for character in text.upper() if character.isalnum())


def read(image: np.ndarray, case: str) -> str:
    """Everything OCR reads in ``image``, folded; recorded under ``case``."""
    texts = [box.text for box in read_text(image)]
    READ[case] = texts
    return folded(" ".join(texts))


def only_image(dataset: pydicom.Dataset) -> np.ndarray:
    return viewable_frames(dataset, [0])[0]


# ---- every kind ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_text_burned_into_each_kind_is_read(kind):
    dataset = written(image_dataset(kind, TEXT, patient=FAKE_IDENTIFIERS, uid_seed=kind,
                                    frames=3, text_frame=1))
    frames = int(dataset.get("NumberOfFrames") or 1)
    images = viewable_frames(dataset, frames_to_read(frames))
    assert all(image.dtype == np.uint8 for image in images)
    expected_shape = (256, 256, 3) if kind in COLOUR_KINDS else (256, 256)
    assert all(image.shape == expected_shape for image in images)
    text = read(images[1] if frames > 1 else images[0], kind)
    assert "TESTPERSON" in text and "MRN40417723" in text, text


@pytest.mark.parametrize("kind", KINDS)
def test_an_image_without_text_gives_no_boxes(kind):
    dataset = written(image_dataset(kind, [], patient=FAKE_IDENTIFIERS, uid_seed="clean"))
    boxes = read_text(only_image(dataset))
    READ[f"clean {kind}"] = [box.text for box in boxes]
    assert boxes == []


def test_a_large_image_without_text_gives_no_boxes():
    dataset = image_dataset("US", [], patient={}, uid_seed="clean", size=1024)
    assert read_text(only_image(dataset)) == []


def corner_lines(size: int, text_size: int) -> list[tuple[int, int, str]]:
    """Scanner overlay: name and date at the top, ID and accession number at the bottom."""
    font = ImageFont.load_default(size=text_size)

    def right(text: str) -> int:
        return size - 8 - int(font.getlength(text))
    bottom = size - text_size - 10
    return [(8, 8, "TESTPERSON^ALICE"), (right("23-SEP-1958"), 8, "23-SEP-1958"),
            (8, bottom, "ID MRN40417723"), (right("ACC88310452"), bottom, "ACC88310452")]


@pytest.mark.parametrize("size, text_size, kind", [
    (512, 12, "MR"), (512, 14, "CT"), (512, 16, "US"), (1024, 12, "SC"), (1024, 16, "US_YBR")])
def test_scanner_sized_text_is_read_on_larger_images(size, text_size, kind):
    dataset = image_dataset(kind, corner_lines(size, text_size), patient={}, uid_seed="size",
                            size=size, text_size=text_size)
    text = read(only_image(dataset), f"{kind} {size} px, {text_size} px text")
    for token in ("TESTPERSON", "23SEP1958", "MRN40417723", "ACC88310452"):
        assert token in text, (token, text)


def test_a_line_across_the_tiles_is_read_whole():
    """A line longer than the tiles' overlap, across the edges of two tiles, is one line; a
    line across a row of tiles' edge is read once."""
    assert _tile_starts_of(1024) == [0, 384]
    lines = [(330, 200, "TESTPERSON^ALICE MRN40417723 23-SEP-1958"),
             (700, 632, "ACC88310452")]
    dataset = image_dataset("MR", lines, patient={}, uid_seed="tiles", size=1024,
                            text_size=16)
    boxes = read_text(only_image(dataset))
    READ["lines across tiles"] = [box.text for box in boxes]
    first = [box for box in boxes if "TESTPERSON" in folded(box.text)]
    assert len(first) == 1 and "MRN40417723" in folded(first[0].text), boxes
    assert "23SEP1958" in folded(first[0].text), boxes
    assert sum("ACC88310452" in folded(box.text) for box in boxes) == 1, boxes


def _tile_starts_of(length: int) -> list[int]:
    return ocr._tile_starts(length)


@pytest.mark.parametrize("length", [100, 640, 641, 700, 1024, 1536, 2048])
def test_tiles_cover_the_image_and_overlap(length):
    starts = _tile_starts_of(length)
    assert starts[0] == 0 and min(starts[-1] + TILE_SIDE, length) == length
    assert all(later - earlier <= TILE_SIDE - TILE_OVERLAP
               for earlier, later in zip(starts, starts[1:], strict=False))


# ---- controls: what OCR makes of harmless overlays -------------------------------------------

def test_orientation_letters_are_too_short_to_be_listed():
    """Single letters: the detector rarely finds one alone (here it finds 'R' of R, L, A)."""
    lines = [(4, 120, "R"), (244, 120, "L"), (124, 4, "A")]
    boxes = read_text(only_image(image_dataset("MR", lines, patient={}, uid_seed="rla")))
    READ["orientation letters R, L, A"] = [box.text for box in boxes]
    assert all(len(folded(box.text)) < 3 for box in boxes), boxes


def test_a_sequence_name_is_read_as_text():
    """'T1 AX 5mm' is read (as 'T1 AX5mm'): verification lists it for a person to read."""
    dataset = image_dataset("MR", [(8, 230, "T1 AX 5mm")], patient={}, uid_seed="seq")
    assert read(only_image(dataset), "sequence name T1 AX 5mm") == "T1AX5MM"


def scale_bar(image: np.ndarray) -> np.ndarray:
    """A 100-pixel line with six tick marks at the bottom right."""
    marked = image.copy()
    marked[240, 150:251] = 255
    for x in range(150, 251, 20):
        marked[232:241, x] = 255
    return marked


def test_a_scale_bar_is_not_text():
    image = scale_bar(only_image(image_dataset("CT", [], patient={}, uid_seed="bar")))
    boxes = read_text(image)
    READ["scale bar"] = [box.text for box in boxes]
    assert boxes == []
    labelled = render_text(image, [(200, 212, "5 cm")], 14, 255)
    assert read(labelled, "scale bar labelled 5 cm") == "5CM"


# ---- frames ----------------------------------------------------------------------------------

def test_multi_frame_text_is_found_on_its_frame_only():
    dataset = written(image_dataset("MR_MULTIFRAME", TEXT, patient=FAKE_IDENTIFIERS,
                                    uid_seed="mf", frames=5, text_frame=2))
    assert frames_to_read(5) == [0, 2, 4]
    first, middle, last = viewable_frames(dataset, [0, 2, 4])
    text = read(middle, "multi-frame, frame 3 of 5")
    assert "TESTPERSON" in text and "MRN40417723" in text, text
    assert read_text(first) == [] and read_text(last) == []


def test_only_the_requested_frames_are_decoded(monkeypatch):
    dataset = written(image_dataset("MR_MULTIFRAME", TEXT, patient={}, uid_seed="mf",
                                    frames=5, text_frame=2))
    asked: list[object] = []
    decode = Decoder.as_array

    def recording(self, src, **kwargs):
        asked.append(kwargs.get("index"))
        return decode(self, src, **kwargs)
    monkeypatch.setattr(Decoder, "as_array", recording)
    viewable_frames(dataset, [2])
    assert asked == [2]


@pytest.mark.parametrize("frames, sample, expected", [
    (1, ("first", "middle", "last"), [0]),
    (2, ("first", "middle", "last"), [0, 1]),
    (3, ("first", "middle", "last"), [0, 1, 2]),
    (10, ("first", "middle", "last"), [0, 4, 9]),
    (10, ("last", "first"), [0, 9]),
    (10, ("middle", "middle"), [4]),
    (11, ("middle",), [5]),
    (4, ("all",), [0, 1, 2, 3]),
    (4, ("Last",), [3]),
    (10, "first", [0]),
    (0, ("first",), [])])
def test_frames_to_read(frames, sample, expected):
    assert frames_to_read(frames, sample) == expected


def test_an_unknown_frame_sample_is_refused():
    with pytest.raises(ValueError, match="unknown frame sample 'centre'"):
        frames_to_read(5, ("first", "centre"))


# ---- pixels as a viewer shows them -----------------------------------------------------------

def test_monochrome1_is_inverted_for_display():
    dataset = written(image_dataset("MONOCHROME1", TEXT, patient={}, uid_seed="m1"))
    image = only_image(dataset)
    stored = dataset.pixel_array
    # Stored high values (dark on a MONOCHROME1 display) come out dark: the background.
    assert image[stored == stored.max()].mean() < image[stored == stored.min()].mean()
    assert image[:4, -4:].mean() < 60 and image[stored == 0].min() == 255  # the text is white
    as_monochrome2 = copy.deepcopy(dataset)
    as_monochrome2.PhotometricInterpretation = "MONOCHROME2"
    assert np.array_equal(image, 255 - only_image(as_monochrome2))
    text = read(image, "MONOCHROME1")
    assert "TESTPERSON" in text and "MRN40417723" in text, text


def test_the_window_is_applied_as_a_viewer_applies_it():
    """CT in the brain window (40/400 HU): air black, the 476 HU text white, soft tissue grey."""
    image = only_image(written(image_dataset("CT", TEXT, patient={}, uid_seed="ct")))
    assert image[:4, -4:].max() == 0
    assert image[128, 128] in range(90, 150)
    stored = written(image_dataset("CT", TEXT, patient={}, uid_seed="ct")).pixel_array
    assert image[stored == 1500].min() == 255


def test_a_voi_lut_sequence_is_applied():
    dataset = written(image_dataset("MR", TEXT, patient={}, uid_seed="lut"))
    del dataset.WindowCenter, dataset.WindowWidth
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.LUTData = [(4095 - value) * 16 for value in range(4096)]  # an inverting LUT
    dataset.VOILUTSequence = Sequence([item])
    stored = dataset.pixel_array.astype(np.float64)
    image = only_image(dataset)
    assert np.abs(image - np.rint(255 * (4095 - stored) / 4095)).max() <= 1


def test_rescale_and_window_from_the_functional_groups():
    """An enhanced multi-frame image keeps rescale and window in its functional groups; a
    frame's own groups win over the shared ones."""
    plain = written(image_dataset("MR_MULTIFRAME", TEXT, patient={}, uid_seed="fg", frames=3,
                                  text_frame=1))
    expected = viewable_frames(plain, [0, 1, 2])
    grouped = copy.deepcopy(plain)
    del grouped.WindowCenter, grouped.WindowWidth
    window, rescale, shared = Dataset(), Dataset(), Dataset()
    window.WindowCenter, window.WindowWidth = 1000, 2000  # the plain window, halved ...
    rescale.RescaleSlope, rescale.RescaleIntercept = 0.5, 0  # ... for values halved
    shared.FrameVOILUTSequence = Sequence([window])
    shared.PixelValueTransformationSequence = Sequence([rescale])
    grouped.SharedFunctionalGroupsSequence = Sequence([shared])
    narrow, own = Dataset(), Dataset()
    narrow.WindowCenter, narrow.WindowWidth = 100, 50
    own.FrameVOILUTSequence = Sequence([narrow])
    grouped.PerFrameFunctionalGroupsSequence = Sequence([Dataset(), own, Dataset()])
    first, middle, last = viewable_frames(grouped, [0, 1, 2])
    assert np.abs(first.astype(int) - expected[0]).max() <= 1
    assert np.abs(last.astype(int) - expected[2]).max() <= 1
    assert middle.mean() > expected[1].mean() + 50  # the narrow window: most of it white


def test_ybr_jpeg_is_converted_to_rgb_once():
    rgb = only_image(written(image_dataset("US", TEXT, patient={}, uid_seed="us")))
    ybr = written(image_dataset("US_YBR", TEXT, patient={}, uid_seed="us"))
    assert ybr.PhotometricInterpretation == "YBR_FULL_422"
    decoded = only_image(ybr)
    assert np.abs(decoded.astype(int) - rgb).mean() < 4  # JPEG's loss only


def test_palette_colour_goes_through_its_palette():
    dataset = written(image_dataset("PALETTE", TEXT, patient={}, uid_seed="pal"))
    image = only_image(dataset)
    indexes = dataset.pixel_array
    assert image.shape == (256, 256, 3)
    assert (image[indexes == 255] == 255).all()  # the text: white
    head = image[100:150, 100:150].reshape(-1, 3).mean(axis=0)
    assert head[0] > head[1] > head[2]  # hot iron: red over green over blue


# ---- what is wrong with an image, in plain words ---------------------------------------------

def cut_codestream(dataset: pydicom.Dataset) -> None:
    codestream = get_frame(dataset.PixelData, 0, number_of_frames=1)
    half = codestream[:len(codestream) // 2 // 2 * 2]
    dataset.PixelData = encapsulate([half])


def broken_jpeg(dataset: pydicom.Dataset) -> None:
    dataset.PixelData = encapsulate([b"\xff\xd8\xff\xdb" + bytes(40) + b"\xff\xd9"])


def unknown_syntax(dataset: pydicom.Dataset) -> None:
    dataset.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.8.498.99"


def short_native(dataset: pydicom.Dataset) -> None:
    dataset.PixelData = dataset.PixelData[:len(dataset.PixelData) // 2]


def no_pixel_data(dataset: pydicom.Dataset) -> None:
    del dataset.PixelData


@pytest.mark.parametrize("kind, damage, message", [
    ("US_YBR", cut_codestream, r"\(JPEG: a compressed frame is cut short\)"),
    ("MR_JPEG2000", cut_codestream, r"\(JPEG 2000: a compressed frame is cut short\)"),
    ("US_YBR", broken_jpeg, r"\(JPEG: the data is damaged"),
    ("MR", unknown_syntax, r"\(an unknown transfer syntax: not an encoding"),
    ("MR", short_native, r"\(uncompressed: the data is damaged, cut short"),
    ("MR", no_pixel_data, r"^the file has no image data$"),
], ids=["cut JPEG", "cut JPEG 2000", "broken JPEG", "unknown syntax", "short native",
        "no pixel data"])
def test_a_damaged_image_is_a_plain_error(kind, damage, message):
    dataset = written(image_dataset(kind, TEXT, patient=FAKE_IDENTIFIERS, uid_seed="bad"))
    damage(dataset)
    with pytest.raises(PixelDecodeError, match=message) as raised:
        viewable_frames(dataset, [0])
    text = str(raised.value)
    assert "Error" not in text and "Traceback" not in text and "\n" not in text
    assert not any(value.lower() in text.lower() for value in FAKE_IDENTIFIERS.values())
    error = raised.value  # no decoder's exception chained to it (a traceback for a person)
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def test_a_missing_decoder_is_a_plain_error(monkeypatch):
    dataset = written(image_dataset("MR_JPEG2000", TEXT, patient={}, uid_seed="plugin"))
    monkeypatch.setattr(Decoder, "is_available", property(lambda self: False))
    with pytest.raises(PixelDecodeError, match=r"\(JPEG 2000: no decoder for it is installed\)"):
        viewable_frames(dataset, [0])


def test_a_frame_the_image_lacks_is_a_plain_error():
    dataset = written(image_dataset("MR", TEXT, patient={}, uid_seed="frame"))
    with pytest.raises(PixelDecodeError, match="^the image has no frame 2$"):
        viewable_frames(dataset, [1])


# ---- boxes, thumbnails, the engine -----------------------------------------------------------

def test_boxes_are_where_the_text_is():
    boxes = read_text(only_image(image_dataset("MR", TEXT, patient={}, uid_seed="box")))
    by_text = {folded(box.text): box.box for box in boxes}
    corners = by_text["MRN40417723"]
    assert len(corners) == 4
    xs, ys = [x for x, _ in corners], [y for _, y in corners]
    assert min(xs) <= 8 and 90 < max(xs) < 140 and min(ys) <= 232 and 242 <= max(ys) <= 255


@pytest.mark.parametrize("height, width, expected", [
    (512, 512, (256, 256)), (1024, 512, (128, 256)), (80, 100, (100, 80))])
def test_thumbnail_is_a_small_png_with_the_boxes_drawn(height, width, expected):
    image = np.zeros((height, width), dtype=np.uint8)
    image[10:30, 10:60] = 200
    box = ocr.TextBox("TEXT", 1.0, ((10, 10), (59, 10), (59, 29), (10, 29)))
    picture = Image.open(io.BytesIO(thumbnail_png(image, [box])))
    assert picture.format == "PNG" and picture.size == expected
    pixels = np.array(picture.convert("RGB"))
    assert ((pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)).any()


def test_the_engine_is_described():
    assert re.fullmatch(r"rapidocr \d+\.\d+\.\d+ \(PP-OCRv6 small models, "
                        r"onnxruntime \d+\.\d+\.\d+\)", engine_description())


def test_ocr_runs_without_network_or_cache(tmp_path):
    """A fresh process with every connection refused, rapidocr's downloader replaced by a
    failure and an empty home loads the engine and reads text, printing nothing and writing
    nothing to the home folder."""
    image = tmp_path / "image.npy"
    np.save(image, only_image(image_dataset("SC", TEXT, patient={}, uid_seed="net")))
    script = (
        "import socket, sys, numpy\n"
        "def refuse(*args, **kwargs):\n"
        "    raise OSError('network refused by the test')\n"
        "socket.socket.connect = refuse\n"
        "socket.socket.connect_ex = refuse\n"
        "socket.create_connection = refuse\n"
        "socket.getaddrinfo = refuse\n"
        "from rapidocr.utils import download_file\n"
        "def no_download(*args, **kwargs):\n"
        "    raise SystemExit('rapidocr tried to download')\n"
        "download_file.DownloadFile.run = no_download\n"
        "from deidpipe.ocr import read_text\n"
        "texts = [box.text for box in read_text(numpy.load(sys.argv[1]))]\n"
        "sys.stdout.write('\\n'.join(texts))\n")
    home, cache = tmp_path / "home", tmp_path / "cache"
    environment = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(cache)}
    environment.pop("ORT_DISABLE_TELEMETRY", None)  # deidpipe.ocr sets it itself
    result = subprocess.run([sys.executable, "-c", script, str(image)], capture_output=True,
                            text=True, env=environment, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    assert [folded(line) for line in result.stdout.splitlines()] == [
        "TESTPERSONAALICE", "MRN40417723"], result.stdout  # '^' is read as 'A'
    # Nothing cached either: onnxruntime's telemetry would leave a device ID and an upload
    # queue in ~/.cache/Microsoft/DeveloperTools (its uploads are not Python sockets).
    assert not home.exists() and not cache.exists()


def test_ocr_prints_nothing(capfd):
    """Loading the engine, decoding and reading write nothing to stdout or stderr."""
    ocr._engines.cache_clear()
    dataset = written(image_dataset("US_YBR", TEXT, patient={}, uid_seed="quiet"))
    image = only_image(dataset)
    thumbnail_png(image, read_text(image))
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


# ---- the synthetic images survive staging ----------------------------------------------------

def test_every_kind_is_staged_with_its_pixels_unchanged(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for kind in KINDS:
        dataset = image_dataset(kind, TEXT, patient=FAKE_IDENTIFIERS, uid_seed=kind, frames=3,
                                text_frame=1)
        dataset.save_as(source / f"{kind}.dcm", enforce_file_format=True)
    profile = tmp_path / "profile.yaml"
    profile.write_text(generate_profile(REPO / "profiles" / "PennBrainScienceCenter"))
    staged_dir, manifest_path = tmp_path / "staged" / "ses-01", tmp_path / "manifest.json"
    stage_session(source, profile, staged_dir, manifest_path)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["errors"] == [] and len(manifest["files"]) == len(KINDS)
    for entry in manifest["files"]:
        original = pydicom.dcmread(source / entry["source"])
        staged = pydicom.dcmread(staged_dir / entry["staged"])
        assert staged.PixelData == original.PixelData, entry["source"]
        assert (staged.file_meta.TransferSyntaxUID
                == original.file_meta.TransferSyntaxUID), entry["source"]
        assert staged.PatientID != FAKE_IDENTIFIERS["PatientID"]
