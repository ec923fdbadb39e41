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
from pydicom.uid import (
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
    """A copy of ``image`` with each line of text drawn at (x, y), bright on dark."""
    font = ImageFont.load_default(size=size)
    mask = Image.new("L", (image.shape[1], image.shape[0]), 0)
    draw = ImageDraw.Draw(mask)
    for x, y, text in lines:
        draw.text((x, y), text, fill=255, font=font)
    drawn = np.array(mask) > 127
    result = image.copy()
    bright = value if value is not None else (
        np.iinfo(image.dtype).max if image.dtype.kind in "ui" else image.max())
    result[drawn] = bright
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
                  size: int = 256, frames: int = 1, text_frame: int | None = None) -> Dataset:
    """A whole data set of ``kind`` (one of KINDS) with ``lines`` drawn into its pixels."""
    if kind in ("MR", "MR_JPEG2000", "MR_MULTIFRAME"):
        dataset = _base(kind, patient, uid_seed, MRImageStorage, "MR")
        background = phantom(size, 4000)
        if kind == "MR_MULTIFRAME":
            stack = np.stack([render_text(background.astype(np.uint16), lines, value=4000)
                              if frame == text_frame else background.astype(np.uint16)
                              for frame in range(frames)])
            _gray(dataset, stack, 12)
            dataset.NumberOfFrames = frames
        else:
            _gray(dataset, render_text(background.astype(np.uint16), lines, value=4000), 12)
        dataset.WindowCenter, dataset.WindowWidth = 2000, 4000
        if kind == "MR_JPEG2000":
            dataset.compress(JPEG2000Lossless)
        return dataset
    if kind == "CT":
        dataset = _base(kind, patient, uid_seed, CTImageStorage, "CT")
        stored = phantom(size, 2000).astype(np.int16) - 1000  # HU + 1024 stored as signed
        _gray(dataset, render_text(stored, lines, value=1500), 16, signed=True)
        dataset.RescaleIntercept, dataset.RescaleSlope = -1024, 1
        dataset.WindowCenter, dataset.WindowWidth = 40, 2000
        return dataset
    if kind == "MONOCHROME1":
        dataset = _base(kind, patient, uid_seed, DigitalXRayImageStorageForPresentation, "DX")
        inverted = 4095 - phantom(size, 4095)
        _gray(dataset, render_text(inverted.astype(np.uint16), lines, value=0), 12)
        dataset.PhotometricInterpretation = "MONOCHROME1"
        return dataset
    if kind == "SC":
        dataset = _base(kind, patient, uid_seed, SecondaryCaptureImageStorage, "OT")
        dataset.ConversionType = "WSD"
        _gray(dataset, render_text(phantom(size, 255).astype(np.uint8), lines), 8)
        return dataset
    if kind == "PALETTE":
        dataset = _base(kind, patient, uid_seed, SecondaryCaptureImageStorage, "OT")
        dataset.ConversionType = "WSD"
        _gray(dataset, render_text(phantom(size, 255).astype(np.uint8), lines), 8)
        dataset.PhotometricInterpretation = "PALETTE COLOR"
        ramp = (np.arange(256, dtype=np.uint16) * 257).tobytes()
        for colour in ("Red", "Green", "Blue"):
            setattr(dataset, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
            setattr(dataset, f"{colour}PaletteColorLookupTableData", ramp)
        return dataset
    if kind in ("US", "US_YBR"):
        dataset = _base(kind, patient, uid_seed, UltrasoundImageStorage, "US")
        gray = phantom(size, 200).astype(np.uint8)
        rgb = np.stack([gray, gray, (gray * 0.8).astype(np.uint8)], axis=2)
        rgb = render_text(rgb, lines, value=(255, 255, 255))
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
        Image.fromarray(rgb).save(buffer, format="JPEG", quality=95)
        dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        dataset.PhotometricInterpretation = "YBR_FULL_422"
        dataset.PixelData = encapsulate([buffer.getvalue()])
        dataset["PixelData"].VR = "OB"
        dataset.LossyImageCompression = "01"
        return dataset
    raise ValueError(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
