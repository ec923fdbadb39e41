"""Synthetic images with text burned into their pixels, for the OCR tests and the demo.

Each is a whole DICOM data set built from scratch: a smooth "phantom" (an ellipse on a
gradient) with the text drawn in where scanners put it, patient values as given, and UIDs made
the same way as ``deidpipe.synthetic`` makes them. Never put real patient data here.
"""

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_encoder
from pydicom.uid import (
    JPEG2000,
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
)

from deidpipe.synthetic import _uid

Lines = list[tuple[int, int, str]]  # (x, y, text)
KINDS = ("MR", "CT", "MONOCHROME1", "US", "US_YBR", "SC", "PALETTE", "MR_JPEG2000",
         "MR_MULTIFRAME")


def phantom(size: int, maximum: int) -> np.ndarray:
    """An ellipse on a soft gradient, scaled to 0..maximum (no text)."""
    y, x = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    inside = ((x - 0.5) / 0.38) ** 2 + ((y - 0.52) / 0.45) ** 2 <= 1
    values = 0.08 + 0.1 * x + 0.45 * inside + 0.1 * inside * np.cos(9 * x) * np.sin(7 * y)
    return np.clip(values * maximum * 0.8, 0, maximum)


def render_text(image: np.ndarray, lines: Lines, size: int = 14,
                value: int | tuple[int, ...] | None = None) -> np.ndarray:
    """A copy of ``image`` with each line of text drawn at (x, y) (its top left) in ``value``:
    by default the image's maximum, bright on dark. The text is not anti-aliased (scanner
    overlays seldom are), so the pixels hold ``value`` or what was there."""
    font = ImageFont.load_default(size=size)
    mask = Image.new("L", (image.shape[1], image.shape[0]), 0)
    draw = ImageDraw.Draw(mask)
    for x, y, text in lines:
        draw.text((x, y), text, fill=255, font=font)
    drawn = np.array(mask) > 127
    result = image.copy()
    result[drawn] = value if value is not None else image.max()
    return result


def _base(kind: str, patient: dict[str, str], uid_seed: str, sop_class: str,
          modality: str) -> Dataset:
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = sop_class
    dataset.SOPClassUID = sop_class
    dataset.SOPInstanceUID = _uid("burned-in", uid_seed, kind, "instance")
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    dataset.StudyInstanceUID = _uid("burned-in", uid_seed, "study")
    dataset.SeriesInstanceUID = _uid("burned-in", uid_seed, kind, "series")
    dataset.Modality = modality
    dataset.StudyDate = "20040826"
    dataset.SeriesNumber = 90
    dataset.InstanceNumber = 1
    dataset.SeriesDescription = f"Synthetic {kind}"
    dataset.ImageType = ["ORIGINAL", "PRIMARY"]
    for keyword, text in patient.items():
        setattr(dataset, keyword, text)
    return dataset


def _gray(dataset: Dataset, pixels: np.ndarray, bits: int, signed: bool = False) -> None:
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.Rows, dataset.Columns = pixels.shape[-2:]
    dataset.BitsAllocated = 16 if bits > 8 else 8
    dataset.BitsStored = bits
    dataset.HighBit = bits - 1
    dataset.PixelRepresentation = 1 if signed else 0
    dtype = (np.int16 if signed else np.uint16) if bits > 8 else np.uint8
    dataset.PixelData = pixels.astype(dtype).tobytes()


def image_dataset(kind: str, lines: Lines, *, patient: dict[str, str], uid_seed: str,
                  size: int = 256, frames: int = 1, text_frame: int | None = None,
                  text_size: int = 14) -> Dataset:
    """A whole data set of ``kind`` (one of KINDS), ``size`` pixels square, with ``lines``
    drawn into its pixels (``text_size`` pixels high) and the ``patient`` values in its header.

    MR (MONOCHROME2, 12 of 16 bits, a window), CT (signed, rescaled to HU, brain window),
    MONOCHROME1 (DX, stored inverted, no window), US (RGB), US_YBR (JPEG baseline,
    YBR_FULL_422), SC (8-bit secondary capture, WSD), PALETTE (PALETTE COLOR, a hot-iron
    palette), MR_JPEG2000 (the MR image in JPEG 2000), MR_MULTIFRAME (``frames`` frames, the
    text on ``text_frame`` only, or on every frame when it is None). ``frames`` and
    ``text_frame`` mean nothing to the single-frame kinds."""
    if kind in ("MR", "MR_JPEG2000", "MR_MULTIFRAME"):
        dataset = _base(kind, patient, uid_seed, MRImageStorage, "MR")
        background = phantom(size, 4000)
        if kind == "MR_MULTIFRAME":
            # The text is on text_frame only, on every frame when it is None.
            stack = np.stack([render_text(background.astype(np.uint16), lines, text_size, 4000)
                              if text_frame in (None, frame) else background.astype(np.uint16)
                              for frame in range(frames)])
            _gray(dataset, stack, 12)
            dataset.NumberOfFrames = frames
        else:
            _gray(dataset, render_text(background.astype(np.uint16), lines, text_size, 4000),
                  12)
        dataset.WindowCenter, dataset.WindowWidth = 2000, 4000
        if kind == "MR_JPEG2000":
            # The SOP Instance UID stays the one made from uid_seed (compress() makes a new one).
            if get_encoder(JPEG2000Lossless).is_available:
                dataset.compress(JPEG2000Lossless, generate_instance_uid=False)
            else:  # pylibjpeg-openjpeg encodes both; another encoder may be lossy only
                dataset.compress(JPEG2000, j2k_cr=[10], generate_instance_uid=False)
                dataset.LossyImageCompression = "01"
                dataset.LossyImageCompressionRatio = 10
                dataset.LossyImageCompressionMethod = "ISO_15444_1"
        return dataset
    if kind == "CT":
        dataset = _base(kind, patient, uid_seed, CTImageStorage, "CT")
        # Air (-1000 HU) around a head of soft tissue (about 0 to 60 HU); stored as HU + 1024,
        # signed, with the text at 476 HU (white in the brain window).
        level = phantom(size, 1)
        hounsfield = np.where(level > 0.3, 30 + 300 * (level - 0.51), -1000)
        stored = np.rint(hounsfield).astype(np.int16) + 1024
        _gray(dataset, render_text(stored, lines, text_size, 1500), 16, signed=True)
        dataset.RescaleIntercept, dataset.RescaleSlope = -1024, 1
        dataset.RescaleType = "HU"
        dataset.WindowCenter, dataset.WindowWidth = 40, 400
        return dataset
    if kind == "MONOCHROME1":
        dataset = _base(kind, patient, uid_seed, DigitalXRayImageStorageForPresentation, "DX")
        inverted = 4095 - phantom(size, 4095)
        _gray(dataset, render_text(inverted.astype(np.uint16), lines, text_size, 0), 12)
        dataset.PhotometricInterpretation = "MONOCHROME1"
        dataset.PresentationLUTShape = "INVERSE"  # what DX requires of MONOCHROME1
        return dataset
    if kind == "SC":
        dataset = _base(kind, patient, uid_seed, SecondaryCaptureImageStorage, "OT")
        dataset.ConversionType = "WSD"
        # A screen capture's text is white, brighter than anything in the picture.
        _gray(dataset, render_text(phantom(size, 255).astype(np.uint8), lines, text_size, 255),
              8)
        return dataset
    if kind == "PALETTE":
        dataset = _base(kind, patient, uid_seed, SecondaryCaptureImageStorage, "OT")
        dataset.ConversionType = "WSD"
        indexes = render_text(phantom(size, 220).astype(np.uint8), lines, text_size, 255)
        _gray(dataset, indexes, 8)
        dataset.PhotometricInterpretation = "PALETTE COLOR"
        # A hot-iron palette, 16 bits an entry: black, red, yellow, white at index 255 (the
        # text), so that a palette applied to the wrong channel shows.
        ramp = np.arange(256) / 255
        for colour, offset in (("Red", 0), ("Green", 1), ("Blue", 2)):
            table = np.rint(np.clip(3 * ramp - offset, 0, 1) * 65535).astype("<u2")
            dataset.add_new(f"{colour}PaletteColorLookupTableDescriptor", "US", [256, 0, 16])
            dataset.add_new(f"{colour}PaletteColorLookupTableData", "OW", table.tobytes())
        return dataset
    if kind in ("US", "US_YBR"):
        dataset = _base(kind, patient, uid_seed, UltrasoundImageStorage, "US")
        gray = phantom(size, 200).astype(np.uint8)
        rgb = np.stack([gray, gray, (gray * 0.8).astype(np.uint8)], axis=2)
        rgb = render_text(rgb, lines, text_size, (255, 255, 255))
        dataset.SamplesPerPixel = 3
        dataset.Rows, dataset.Columns = rgb.shape[:2]
        dataset.BitsAllocated = dataset.BitsStored = 8
        dataset.HighBit = 7
        dataset.PixelRepresentation = 0
        dataset.PlanarConfiguration = 0
        dataset.BurnedInAnnotation = "NO"
        if kind == "US":
            dataset.PhotometricInterpretation = "RGB"
            dataset.PixelData = rgb.tobytes()
            return dataset
        buffer = io.BytesIO()
        # Chroma subsampled 2:1 horizontally only (subsampling=1), as YBR_FULL_422 says.
        Image.fromarray(rgb).save(buffer, format="JPEG", quality=95, subsampling=1)
        dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        dataset.PhotometricInterpretation = "YBR_FULL_422"
        dataset.PixelData = encapsulate([buffer.getvalue()])
        dataset["PixelData"].VR = "OB"
        dataset.LossyImageCompression = "01"
        dataset.LossyImageCompressionRatio = round(rgb.nbytes / len(buffer.getvalue()), 2)
        dataset.LossyImageCompressionMethod = "ISO_10918_1"
        return dataset
    raise ValueError(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
