"""Text burned into pixels: each image as a viewer shows it, read with OCR.

The engine is rapidocr with the PP-OCR models that ship inside its wheel (named by path, so
rapidocr never looks for them on the network), run by onnxruntime on the CPU; it is loaded once
per process, when first needed, and its logging is silenced.

Pixels are turned into 8-bit images the way a viewer shows them: grayscale through the modality
LUT (or rescale) and the VOI LUT or window (from the functional groups of an enhanced
multi-frame image when the top level has none), else scaled from the frame's minimum to its
maximum, MONOCHROME1 inverted; palette colour through its palette; RGB as it is; YBR as RGB
(pydicom's decoders convert it, and say so). Only the frames asked for are decoded. Compressed
images decode through pydicom's plugins (pylibjpeg with -libjpeg, -openjpeg and -rle); a JPEG
or JPEG 2000 frame cut short is an error here, because one decoder pads it silently.

Detection is done in tiles of at most ``TILE_SIDE`` pixels at the image's own resolution: on
larger inputs the detector misses small text (measured: scanner-sized 12-16 pixel text on a
1024-pixel image was found about 6 times in 10 in one pass, every time in tiles). Lines cut by
a tile's edge are joined with their other part from the overlapping tile before recognition,
which reads each line from the whole image. Images larger than ``MAX_SIDE`` are scaled down
to it first (text burned into such images is large).
"""

import io
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

MIN_SCORE = 0.5  # recognised lines below this confidence are dropped
TILE_SIDE = 640  # detection input, at most (see the module's docstring)
TILE_OVERLAP = 128  # tiles overlap by this much, so that a cut line shows whole in one
MAX_SIDE = 2048  # larger images are scaled down to this before OCR
TALLEST_LINE = 96  # a detected box taller than this and than half its tile is no text line
EDGE = 2  # pixels: a box this close to a tile's edge is cut by it
THUMBNAIL_SIDE = 256
BOX_COLOUR = (255, 0, 0)
DETECTION_MODEL = "PP-OCRv6_det_small.onnx"  # in rapidocr's models folder
RECOGNITION_MODEL = "PP-OCRv6_rec_small.onnx"
MODELS_DESCRIPTION = "PP-OCRv6 small models"
SILENCED_LOGGERS = ("RapidOCR", "rapidocr")
# A JPEG, JPEG-LS or JPEG 2000 codestream ends with this marker (EOI, or EOC for JPEG 2000).
END_OF_CODESTREAM = b"\xff\xd9"

# onnxruntime (1.32 on Linux) starts Microsoft's telemetry client when it is imported: a device
# ID and an event queue under ~/.cache/Microsoft/DeveloperTools, uploaded to
# mobile.events.data.microsoft.com. Off, before rapidocr imports it.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"


class PixelDecodeError(Exception):
    """The image data cannot be turned into pixels; the message says why, in plain words."""


@dataclass(frozen=True)
class TextBox:
    """One line of text OCR read, with its corners in the image's pixels (clockwise from the
    top left)."""

    text: str
    score: float
    box: tuple[tuple[int, int], ...]


def frames_to_read(number_of_frames: int,
                   sample: Sequence[str] = ("first", "middle", "last")) -> list[int]:
    """0-based indexes of the frames (or images of a series) that ``sample`` names, each once,
    in order: ``first``, ``middle`` (the lower middle of an even count), ``last``, ``all``."""
    if isinstance(sample, str):
        sample = (sample,)
    if number_of_frames <= 0:
        return []
    positions = {"first": [0], "middle": [(number_of_frames - 1) // 2],
                 "last": [number_of_frames - 1], "all": list(range(number_of_frames))}
    picked: set[int] = set()
    for name in sample:
        key = str(name).strip().lower()
        if key not in positions:
            raise ValueError(f"unknown frame sample {name!r}: use first, middle, last or all")
        picked.update(positions[key])
    return sorted(picked)


# ---- pixels as a viewer shows them ------------------------------------------------------------

def _syntax_name(syntax: UID) -> str:
    """A short name of a transfer syntax for a message ('JPEG 2000', 'JPEG', 'RLE')."""
    keyword = syntax.keyword
    if keyword.startswith(("JPEG2000", "HTJ2K")):
        return "JPEG 2000"
    if keyword.startswith("JPEGLS"):
        return "JPEG-LS"
    if keyword.startswith("JPEG"):
        return "JPEG"
    if keyword.startswith("RLE"):
        return "RLE"
    if keyword.startswith("Deflated"):
        return "deflated"
    if keyword:
        return syntax.name if syntax.is_compressed else "uncompressed"
    return "an unknown transfer syntax"


def _cannot_decode(syntax: UID, why: str) -> PixelDecodeError:
    return PixelDecodeError(f"the image data cannot be decoded ({_syntax_name(syntax)}: {why})")


def _check_codestreams_complete(dataset: Dataset, syntax: UID, frames: Sequence[int],
                                number_of_frames: int) -> None:
    """JPEG-family frames end with their end-of-codestream marker: a frame cut short does not
    (pylibjpeg-libjpeg decodes one without complaint, the missing part grey)."""
    from pydicom.encaps import get_frame

    if not syntax.keyword.startswith(("JPEG", "HTJ2K")) or syntax.keyword == "JPIPReferenced":
        return
    offsets = None
    if "ExtendedOffsetTable" in dataset and "ExtendedOffsetTableLengths" in dataset:
        offsets = (dataset.ExtendedOffsetTable, dataset.ExtendedOffsetTableLengths)
    for frame in frames:
        try:
            codestream = get_frame(dataset.PixelData, frame, extended_offsets=offsets,
                                   number_of_frames=number_of_frames)
        except Exception:  # noqa: BLE001 - any malformed encapsulation is the same to a person
            raise _cannot_decode(syntax, "the encapsulated frames are damaged") from None
        if not codestream.rstrip(b"\x00").endswith(END_OF_CODESTREAM):
            raise _cannot_decode(syntax, "a compressed frame is cut short")


def _decode(dataset: Dataset, syntax: UID, frame: int) -> tuple[np.ndarray, str]:
    """One frame's pixels as pydicom's decoders give them (YBR as RGB), and their
    photometric interpretation after decoding."""
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise _cannot_decode(syntax, "not an encoding pydicom can decode") from None
    if not decoder.is_available:
        raise _cannot_decode(syntax, "no decoder for it is installed")
    try:
        pixels, meta = decoder.as_array(dataset, index=frame, raw=False)
    except Exception:  # noqa: BLE001 - every decoder failure is the same to a person
        raise _cannot_decode(syntax, "the data is damaged, cut short or does not match the "
                                     "image's size") from None
    return pixels, str(meta.get("photometric_interpretation", "")).strip().upper()


def _functional_group(dataset: Dataset, frame: int, keyword: str) -> Dataset | None:
    """The first item of ``keyword`` in the frame's own functional groups, else the shared
    ones (enhanced multi-frame images keep rescale and window there)."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame),
                          ("SharedFunctionalGroupsSequence", 0)):
        items = dataset.get(groups)
        if items and index < len(items):
            sequence = items[index].get(keyword)
            if sequence:
                return sequence[0]
    return None


def _copy(source: Dataset, target: Dataset, keywords: Sequence[str]) -> None:
    for keyword in keywords:
        if keyword in source:
            target[keyword] = source[keyword]


def _view(dataset: Dataset) -> Dataset:
    """An empty data set with the file's meta (LUT data in OW needs its byte order)."""
    view = Dataset()
    if (file_meta := getattr(dataset, "file_meta", None)) is not None:
        view.file_meta = file_meta
    return view


def _modality_view(dataset: Dataset, frame: int) -> Dataset:
    """The frame's modality LUT module, alone (pydicom's functions read and change what they
    are given; the file's data set stays as it is)."""
    view = _view(dataset)
    if "ModalityLUTSequence" in dataset or "RescaleSlope" in dataset:
        _copy(dataset, view, ("ModalityLUTSequence", "RescaleSlope", "RescaleIntercept"))
    elif (item := _functional_group(dataset, frame, "PixelValueTransformationSequence")):
        _copy(item, view, ("RescaleSlope", "RescaleIntercept"))
    return view


def _voi_view(dataset: Dataset, frame: int) -> Dataset:
    """The frame's VOI LUT module, with an 8-bit output range for the window."""
    view = _view(dataset)
    view.PhotometricInterpretation = "MONOCHROME2"
    view.BitsStored = 8
    view.PixelRepresentation = 0
    voi = ("VOILUTSequence", "WindowCenter", "WindowWidth", "VOILUTFunction")
    if any(keyword in dataset for keyword in voi):
        _copy(dataset, view, voi)
    elif (item := _functional_group(dataset, frame, "FrameVOILUTSequence")):
        _copy(item, view, ("WindowCenter", "WindowWidth", "VOILUTFunction"))
    return view


def _stretched(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if not high > low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values.astype(np.float64) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _min_max(values: np.ndarray) -> np.ndarray:
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if finite.size == 0:
        return np.zeros(values.shape, dtype=np.uint8)
    return _stretched(np.nan_to_num(values), float(finite.min()), float(finite.max()))


def _grayscale(dataset: Dataset, frame: int, pixels: np.ndarray, inverted: bool) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing

    values = apply_modality_lut(pixels, _modality_view(dataset, frame))
    view = _voi_view(dataset, frame)
    image = None
    try:
        if view.get("VOILUTSequence"):
            item = view.VOILUTSequence[0]
            entries = int(item.LUTDescriptor[0]) or 2 ** 16
            first = int(item.LUTDescriptor[1])
            table = apply_voi(np.arange(first, first + entries, dtype=np.int64), view)
            image = _stretched(apply_voi(np.rint(values).astype(np.int64), view),
                               float(table.min()), float(table.max()))
        elif "WindowCenter" in view and "WindowWidth" in view:
            image = _stretched(apply_windowing(values, view), 0.0, 255.0)
    except (ValueError, TypeError, IndexError, KeyError, AttributeError,
            NotImplementedError):
        image = None  # a damaged VOI LUT or window: the frame's own range below
    if image is None:
        image = _min_max(np.asarray(values))
    return 255 - image if inverted else image


def _palette(dataset: Dataset, pixels: np.ndarray) -> np.ndarray:
    from pydicom.pixels import apply_color_lut

    colours = apply_color_lut(pixels, dataset)[..., :3]
    if colours.dtype == np.uint8:
        return colours
    # 16-bit entries; some writers put 8-bit values in them.
    top = 255.0 if int(colours.max()) <= 255 else float(np.iinfo(colours.dtype).max)
    return _stretched(colours, 0.0, top)


def _colour(dataset: Dataset, pixels: np.ndarray, photometric: str) -> np.ndarray:
    from pydicom.pixels import convert_color_space

    colours = pixels[..., :3]
    if photometric in ("YBR_FULL", "YBR_FULL_422"):  # a decoder that left it as YBR
        colours = convert_color_space(colours, "YBR_FULL", "RGB")
    if colours.dtype == np.uint8:
        return colours
    bits = int(dataset.get("BitsStored") or 8 * colours.dtype.itemsize)
    return _stretched(colours, 0.0, float(2 ** bits - 1))


def _viewable(dataset: Dataset, frame: int, pixels: np.ndarray, photometric: str) -> np.ndarray:
    if pixels.ndim == 3:
        return _colour(dataset, pixels, photometric)
    if photometric == "PALETTE COLOR":
        return _palette(dataset, pixels)
    return _grayscale(dataset, frame, pixels, photometric == "MONOCHROME1")


def viewable_frames(dataset: Dataset, frames: Sequence[int]) -> list[np.ndarray]:
    """Each requested frame (0-based) as a viewer shows it: uint8, HxW (grayscale) or HxWx3
    (colour). Only those frames are decoded.

    Raises PixelDecodeError, with a message for a person, when the image data cannot be
    decoded (no pixel data, no decoder installed, damaged or cut data, a frame it lacks)."""
    from pydicom.pixels.utils import get_nr_frames

    if "PixelData" not in dataset:
        raise PixelDecodeError("the file has no image data")
    file_meta = getattr(dataset, "file_meta", None)
    syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if not syntax:
        raise PixelDecodeError("the image data cannot be decoded (the file does not say how "
                               "it is encoded)")
    syntax = UID(str(syntax))
    try:
        compressed = syntax.is_compressed
    except ValueError:  # not a transfer syntax pydicom knows
        raise _cannot_decode(syntax, "not an encoding pydicom can decode") from None
    try:
        number = get_nr_frames(dataset, warn=False)
    except (TypeError, ValueError):
        raise PixelDecodeError("the image data cannot be decoded (its number of frames is "
                               "not a number)") from None
    for frame in frames:
        if not 0 <= frame < number:
            raise PixelDecodeError(f"the image has no frame {frame + 1}")
    if compressed:
        _check_codestreams_complete(dataset, syntax, frames, number)
    images = []
    for frame in frames:
        pixels, photometric = _decode(dataset, syntax, frame)
        try:
            images.append(_viewable(dataset, frame, pixels, photometric))
        except Exception:  # noqa: BLE001 - a palette or colour space pydicom cannot apply
            raise PixelDecodeError("the image cannot be shown as a viewer would (its colour "
                                   "palette or colour space is not supported)") from None
    return images


# ---- OCR -------------------------------------------------------------------------------------

def _silence_rapidocr() -> None:
    """rapidocr logs through its own logger, with its own handler on stderr: switch it off."""
    for name in SILENCED_LOGGERS:
        logger = logging.getLogger(name)
        logger.disabled = True
        logger.propagate = False
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.addHandler(logging.NullHandler())


def load_engines() -> None:
    """Load the OCR models now. A job calls this before it forks its worker processes, so that
    they share one copy (loading takes about a second and 90 MB per process)."""
    _engines()


@cache
def _engines() -> tuple[Any, Any]:
    """rapidocr's detector and recogniser, loaded once per process (about a second), with the
    model files named by path: rapidocr downloads a model only when it has no path."""
    import onnxruntime
    import rapidocr
    from rapidocr import RapidOCR

    onnxruntime.disable_telemetry_events()  # in case it was imported before this module
    onnxruntime.set_default_logger_severity(4)  # fatal errors only
    _silence_rapidocr()
    models = Path(rapidocr.__file__).resolve().parent / "models"
    detection, recognition = models / DETECTION_MODEL, models / RECOGNITION_MODEL
    for model in (detection, recognition):
        if not model.is_file():
            raise RuntimeError(f"rapidocr's bundled OCR model {model.name} is missing: install "
                               "rapidocr 3.10 or later (its wheel holds the models)")
    # One thread per process: a job's parallelism is its worker processes, one per core it
    # was given; onnxruntime's default (a thread per core in every process) would use cores
    # the job was not given, and costs about a fifth more CPU per image.
    common = {"Global.log_level": "critical", "Global.use_cls": False,
              "Det.model_path": str(detection), "Rec.model_path": str(recognition),
              "Det.limit_type": "max", "Det.limit_side_len": TILE_SIDE,
              "EngineConfig.onnxruntime.intra_op_num_threads": 1,
              "EngineConfig.onnxruntime.inter_op_num_threads": 1}
    detector = RapidOCR(params={**common, "Global.use_rec": False})
    recogniser = RapidOCR(params={**common, "Global.use_det": False})
    _silence_rapidocr()
    # The models load on first use: load them now, once.
    detector(np.zeros((32, 32, 3), dtype=np.uint8))
    recogniser(np.zeros((48, 96, 3), dtype=np.uint8))
    return detector, recogniser


def _tile_starts(length: int) -> list[int]:
    """Where the tiles along one side start: evenly spread, overlapping by TILE_OVERLAP or
    more, the last one ending at the image's edge."""
    if length <= TILE_SIDE:
        return [0]
    count = math.ceil((length - TILE_OVERLAP) / (TILE_SIDE - TILE_OVERLAP))
    return sorted({round(index * (length - TILE_SIDE) / (count - 1)) for index in range(count)})


Rect = tuple[float, float, float, float]  # left, top, right, bottom


def _detect(detector: Any, image: np.ndarray) -> list[Rect]:
    """Text boxes in every tile, as rectangles in the image's pixels.

    Left out: a box taller than half its tile (a head's outline, read as an 'O'; no line of
    burned-in text is that tall), and a box cut by a tile's top or bottom edge inside the image
    that the next tile holds whole (a line lower than the tiles' overlap)."""
    height, width = image.shape[:2]
    rows, columns = _tile_starts(height), _tile_starts(width)
    # Rows of tiles overlap by at least this much: a line lower than that is whole in one.
    overlap = min((TILE_SIDE - (b - a) for a, b in zip(rows, rows[1:], strict=False)),
                  default=0)
    rects: list[Rect] = []
    for top in rows:
        bottom = min(top + TILE_SIDE, height)
        for left in columns:
            tile = np.ascontiguousarray(image[top:bottom, left:left + TILE_SIDE])
            boxes = getattr(detector(tile), "boxes", None)
            for box in boxes if boxes is not None else ():
                y0, y1 = float(box[:, 1].min()) + top, float(box[:, 1].max()) + top
                if y1 - y0 > max(TALLEST_LINE, (bottom - top) / 2):
                    continue
                cut = (top > 0 and y0 <= top + EDGE) or (bottom < height and y1 >= bottom - EDGE)
                if cut and y1 - y0 < overlap - 2 * EDGE:
                    continue
                rects.append((float(box[:, 0].min()) + left, y0,
                              float(box[:, 0].max()) + left, y1))
    return rects


def _same_line(first: Rect, second: Rect) -> bool:
    """Two boxes overlap (or touch) across and share most of their height: one line, cut by a
    tile's side or seen whole in two tiles."""
    across = min(first[2], second[2]) - max(first[0], second[0])
    down = min(first[3], second[3]) - max(first[1], second[1])
    taller = max(first[3] - first[1], second[3] - second[1])
    return across >= 0 and down >= 0.5 * taller


def _joined(rects: list[Rect]) -> list[Rect]:
    """Boxes of one line joined into one, top to bottom, left to right."""
    joined = list(rects)
    merged = True
    while merged:
        merged = False
        for i in range(len(joined)):
            for j in range(i + 1, len(joined)):
                if _same_line(joined[i], joined[j]):
                    a, b = joined[i], joined.pop(j)
                    joined[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]),
                                 max(a[3], b[3]))
                    merged = True
                    break
            if merged:
                break
    return sorted(joined, key=lambda rect: (rect[1], rect[0]))


def read_text(image: np.ndarray) -> list[TextBox]:
    """The lines of text OCR reads in one viewable frame (uint8, HxW or HxWx3 RGB), top to
    bottom, with their boxes; lines read with a confidence below ``MIN_SCORE`` are left out."""
    import cv2

    detector, recogniser = _engines()
    bgr = (np.repeat(image[:, :, np.newaxis], 3, axis=2) if image.ndim == 2
           else image[:, :, 2::-1])  # rapidocr takes arrays as OpenCV's BGR
    height, width = bgr.shape[:2]
    scale = min(1.0, MAX_SIDE / max(height, width, 1))
    if scale < 1.0:
        bgr = cv2.resize(bgr, (max(1, round(width * scale)), max(1, round(height * scale))),
                         interpolation=cv2.INTER_AREA)
    bgr = np.ascontiguousarray(bgr)
    found = []
    for left, top, right, bottom in _joined(_detect(detector, bgr)):
        x0, y0 = max(0, math.floor(left)), max(0, math.floor(top))
        x1 = min(bgr.shape[1], math.ceil(right) + 1)
        y1 = min(bgr.shape[0], math.ceil(bottom) + 1)
        crop = bgr[y0:y1, x0:x1]
        if crop.size == 0:
            continue
        if crop.shape[0] >= 1.5 * crop.shape[1]:  # a vertical line, turned as rapidocr does
            crop = np.rot90(crop)
        result = recogniser(np.ascontiguousarray(crop))
        texts, scores = getattr(result, "txts", None), getattr(result, "scores", None)
        if not texts or not scores:
            continue
        text, score = str(texts[0]).strip(), float(scores[0])
        if not text or score < MIN_SCORE:
            continue
        corners = ((x0, y0), (x1 - 1, y0), (x1 - 1, y1 - 1), (x0, y1 - 1))
        found.append(TextBox(text, score, tuple((min(width - 1, round(x / scale)),
                                                 min(height - 1, round(y / scale)))
                                                for x, y in corners)))
    return found


def thumbnail_png(image: np.ndarray, boxes: Sequence[TextBox] = (),
                  max_side: int = THUMBNAIL_SIDE) -> bytes:
    """A PNG thumbnail of ``image`` (longer side at most ``max_side``, aspect kept), the text
    boxes outlined in red."""
    from PIL import Image, ImageDraw

    picture = Image.fromarray(image).convert("RGB")
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(width, height, 1))
    if scale < 1.0:
        picture = picture.resize((max(1, round(width * scale)), max(1, round(height * scale))),
                                 Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(picture)
    for box in boxes:
        draw.polygon([(x * scale, y * scale) for x, y in box.box], outline=BOX_COLOUR)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def engine_description() -> str:
    """Which OCR engine, models and runtime, for the report."""
    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"
    return (f"rapidocr {installed('rapidocr')} ({MODELS_DESCRIPTION}, "
            f"onnxruntime {installed('onnxruntime')})")
