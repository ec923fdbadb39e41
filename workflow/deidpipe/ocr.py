"""Text burned into pixels: each image as a viewer shows it, read with OCR.

The engine is rapidocr with the PP-OCR models that ship inside its wheel, run by onnxruntime
on the CPU: nothing is downloaded, and it is loaded once per process, when first needed.
Pixels are turned into 8-bit images the way a viewer shows them (modality LUT, then VOI LUT or
window, MONOCHROME1 inverted, palette colour, RGB; YBR is converted by pydicom's decoders), so
that OCR sees the text a person would see. Compressed images decode through pydicom's plugins
(pylibjpeg with -libjpeg, -openjpeg and -rle).
"""

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

MIN_SCORE = 0.5  # recognised lines below this confidence are dropped
# Detection works on the image at its own size: small images are not enlarged to the
# engine's default of 736 pixels (three times slower, no better on scanner overlays), large
# ones are brought down to this.
MIN_DETECTION_SIDE = 256
MAX_DETECTION_SIDE = 1280
THUMBNAIL_SIDE = 256
BOX_COLOUR = (255, 0, 0)


class PixelDecodeError(Exception):
    """The image data cannot be turned into pixels; the message says why, in plain words."""


@dataclass(frozen=True)
class TextBox:
    """One line of text OCR read, with its corners in the image's pixels."""

    text: str
    score: float
    box: tuple[tuple[int, int], ...]


def frames_to_read(number_of_frames: int,
                   sample: Sequence[str] = ("first", "middle", "last")) -> list[int]:
    """0-based indexes of the frames (or images of a series) a sample names, in order."""
    if number_of_frames <= 0:
        return []
    position = {"first": 0, "middle": (number_of_frames - 1) // 2,
                "last": number_of_frames - 1}
    return sorted({position[name] for name in sample})


def _decode(dataset: Dataset, index: int | None) -> np.ndarray:
    from pydicom.pixels import pixel_array

    try:
        if index is None:
            return pixel_array(dataset)
        return pixel_array(dataset, index=index)
    except Exception as error:  # noqa: BLE001 - every decoder failure is the same to a person
        syntax = getattr(dataset.file_meta, "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax or "unknown transfer syntax"))
        raise PixelDecodeError(f"the image data cannot be decoded ({name}: "
                               f"{type(error).__name__})") from None


def _to_8_bit(dataset: Dataset, pixels: np.ndarray) -> np.ndarray:
    """One frame as a viewer shows it, 8 bits a sample."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric == "PALETTE COLOR":
        colours = apply_color_lut(pixels, dataset)
        return colours if colours.dtype == np.uint8 else _scaled(
            colours, 0, float(np.iinfo(colours.dtype).max))
    if pixels.ndim == 3:  # RGB (pydicom's decoders give YBR images as RGB)
        return pixels if pixels.dtype == np.uint8 else _scaled(pixels, 0, float(pixels.max()))
    values = apply_modality_lut(pixels, dataset)
    if "VOILUTSequence" in dataset or "WindowCenter" in dataset:
        try:
            values = apply_voi_lut(values, dataset, prefer_lut=True)
        except (ValueError, TypeError, IndexError, KeyError):
            pass  # a damaged window: the frame's own range below
    image = _scaled(values, float(np.min(values)), float(np.max(values)))
    return 255 - image if photometric == "MONOCHROME1" else image


def _scaled(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values.astype(np.float64) - low) * (255.0 / (high - low))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def viewable_frames(dataset: Dataset, frames: Sequence[int]) -> list[np.ndarray]:
    """Each requested frame (0-based) as an 8-bit image, HxW or HxWx3.

    Raises PixelDecodeError when the image data cannot be decoded (a missing plugin, damaged
    or cut data, no pixel data)."""
    if "PixelData" not in dataset:
        raise PixelDecodeError("the file has no image data")
    number = int(dataset.get("NumberOfFrames") or 1)
    images = []
    for frame in frames:
        if not 0 <= frame < number:
            raise PixelDecodeError(f"the image has no frame {frame + 1}")
        pixels = _decode(dataset, frame if number > 1 else None)
        try:
            images.append(_to_8_bit(dataset, pixels))
        except (ValueError, TypeError, IndexError, KeyError, AttributeError) as error:
            raise PixelDecodeError("the image cannot be shown as a viewer would "
                                   f"({type(error).__name__})") from None
    return images


@cache
def _engine(side: int) -> Any:
    """One rapidocr engine per detection size and process (loading takes about a second)."""
    for name in ("RapidOCR", "rapidocr"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    from rapidocr import RapidOCR

    engine = RapidOCR(params={"Global.log_level": "critical", "Global.use_cls": False,
                              "Det.limit_side_len": side, "Det.limit_type": "max"})
    for name in ("RapidOCR", "rapidocr"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return engine


def _detection_side(image: np.ndarray) -> int:
    longest = max(image.shape[:2])
    # One engine per power of two keeps the number of engines small.
    side = MIN_DETECTION_SIDE
    while side < min(longest, MAX_DETECTION_SIDE):
        side *= 2
    return min(side, MAX_DETECTION_SIDE)


def read_text(image: np.ndarray) -> list[TextBox]:
    """The lines of text OCR reads in one 8-bit image, with their boxes."""
    rgb = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image
    result = _engine(_detection_side(rgb))(np.ascontiguousarray(rgb))
    texts, scores, boxes = result.txts or (), result.scores or (), result.boxes
    found = []
    for index, (text, score) in enumerate(zip(texts, scores, strict=False)):
        if score < MIN_SCORE or not str(text).strip():
            continue
        corners = tuple((int(round(x)), int(round(y))) for x, y in boxes[index])
        found.append(TextBox(str(text), float(score), corners))
    return found


def thumbnail_png(image: np.ndarray, boxes: Sequence[TextBox] = (),
                  max_side: int = THUMBNAIL_SIDE) -> bytes:
    """A PNG thumbnail of ``image``, aspect kept, the text boxes outlined in red."""
    from PIL import Image, ImageDraw

    picture = Image.fromarray(image).convert("RGB")
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(width, height, 1))
    if scale < 1.0:
        picture = picture.resize((max(1, round(width * scale)), max(1, round(height * scale))))
    draw = ImageDraw.Draw(picture)
    for box in boxes:
        draw.polygon([(x * scale, y * scale) for x, y in box.box], outline=BOX_COLOUR)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def engine_description() -> str:
    """Which OCR engine and runtime, for the report."""
    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"
    return (f"rapidocr {installed('rapidocr')} (its bundled PP-OCR models, "
            f"onnxruntime {installed('onnxruntime')})")
