"""Text burned into the pixels: which images are read (OCR), and what is found in them."""

from dataclasses import dataclass

from deidpipe.dicom.reader import PIXEL_DATA
from deidpipe.manifest import StagedFile
from deidpipe.ocr import (
    PixelDecodeError,
    frames_to_read,
    read_text,
    thumbnail_png,
    viewable_frames,
)
from deidpipe.review import ReviewImage, ReviewText
from deidpipe.verification.context import SessionContext
from deidpipe.verification.reading import frame_count
from deidpipe.verification.registry import Finding
from deidpipe.verification.view import FileView

# ---- text burned into the pixels (OCR) -------------------------------------------------------

OCR_CHECKS = ("burned_in_text", "burned_in_text_review")
OCR_ALL_FRAMES = ("first", "middle", "last")
# Recognised text with fewer letters and digits than this (an orientation letter 'R', a '5')
# is counted but not listed: it cannot hold an identifier the matcher could find.
MIN_OCR_CHARACTERS = 3
MAX_REVIEW_IMAGES = 1000  # thumbnails kept for the review page (it shows 500 at most)


@dataclass(frozen=True)
class ImageInfo:
    """What choosing images for OCR needs of a source file (from its header)."""

    series: str
    instance: int | None
    frames: int
    has_pixels: bool


def ocr_plan(entries: list[StagedFile], infos: list[ImageInfo | None],
             sample: tuple[str, ...]) -> dict[str, bool]:
    """The staged files OCR reads in every session (the ``sample`` of each series by
    InstanceNumber), each mapped to whether it is its series' thumbnail for the review page.
    Files at risk of burned-in text are read too; that is decided file by file."""
    series: dict[str, list[tuple[int, int, str]]] = {}
    for order, (entry, info) in enumerate(zip(entries, infos, strict=True)):
        if info is not None and info.has_pixels:
            instance = info.instance if info.instance is not None else order
            series.setdefault(info.series, []).append((instance, order, entry.staged))
    plan: dict[str, bool] = {}
    for members in series.values():
        members.sort()
        picked = [members[index][2] for index in frames_to_read(len(members), sample)]
        for position, staged in enumerate(picked):
            plan[staged] = position == 0
    return plan


def _image_region(box: tuple[tuple[int, int], ...], width: int, height: int) -> str:
    """Where in the image a text box is, in words: 'top left', 'middle', 'bottom right'."""
    x = sum(point[0] for point in box) / len(box) / max(width, 1)
    y = sum(point[1] for point in box) / len(box) / max(height, 1)
    row = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else "middle"
    column = "left" if x < 1 / 3 else "right" if x > 2 / 3 else "centre"
    return "middle" if (row, column) == ("middle", "centre") else f"{row} {column}"


def read_burned_in_text(view: FileView, staged: str, name: str, at_risk: bool,
                        context: SessionContext) -> None:
    """OCR the chosen frames of one staged image and match what it reads against the
    session's identifiers: a match fails, other text and images that cannot be decoded are
    for a person to look at. Thumbnails go to the review page beside the staged session."""
    if not any(context.active(check) for check in OCR_CHECKS) or PIXEL_DATA not in view:
        return
    frames_in_file = frame_count(view)
    context.ocr_counts["images"] += 1
    context.ocr_counts["frames"] += frames_in_file
    is_thumbnail = context.ocr_plan.get(staged)
    if not at_risk and is_thumbnail is None:
        return
    frames = frames_to_read(frames_in_file, OCR_ALL_FRAMES if at_risk else context.ocr_sample)
    series = staged.rpartition("/")[0]
    reasons_of_file = ["at risk of burned-in text"] if at_risk else []
    try:
        images = viewable_frames(view.dataset(), frames)
    except PixelDecodeError as error:
        context.ocr_counts["not_decoded"] += len(frames)
        context.add(Finding("burned_in_text_review", name, "pixel data",
                            f"{error}: OCR could not read this image, so open it and look for "
                            "names, IDs or dates before it is shared"))
        context.review_images.append(ReviewImage(staged, frames[0], series, (
            *reasons_of_file, "could not be decoded"), b"", (), str(error)))
        return
    for frame, image in zip(frames, images, strict=True):
        context.ocr_counts["read"] += 1
        height, width = image.shape[:2]
        boxes = [box for box in read_text(image)
                 if sum(character.isalnum() for character in box.text) >= MIN_OCR_CHARACTERS]
        where = "pixel data" + (f", frame {frame + 1} of {frames_in_file}"
                                if frames_in_file > 1 else "")
        texts = []
        for box in boxes:
            region = _image_region(box.box, width, height)
            needles = context.matcher.find_in_ocr_text(box.text)
            for needle in needles:
                check = ("burned_in_text_review" if needle.kind == "name_part"
                         else "burned_in_text")
                what = {"identifier": f"holds the source's {needle.attribute}",
                        "staff_name": f"holds the name in the source's {needle.attribute}",
                        "name_part": f"holds a part of the source's {needle.attribute}"}
                context.add(Finding(check, name, f"{where}, text at the {region}",
                                    f"text burned into the image {what[needle.kind]} (value "
                                    "not shown); see the review page", needle.attribute))
            if not needles:
                context.pixel_text.append({"file": name, "frame": frame + 1, "region": region,
                                           "text": box.text})
            texts.append(ReviewText(box.text, needles[0].attribute if needles else "",
                                    box.box))
        unmatched = [text for text in texts if not text.matched]
        if unmatched:
            context.add(Finding("burned_in_text_review", name, where,
                                "text burned into the image matches no identifier of the "
                                "source: read it on the review page (it can be a name the "
                                "header never held)"))
        if texts:
            context.ocr_counts["with_text"] += 1
        if any(text.matched for text in texts):
            context.ocr_counts["matched"] += 1
        reasons = [*reasons_of_file]
        if any(text.matched for text in texts):
            reasons.append("matches an identifier")
        elif texts:
            reasons.append("text found")
        if is_thumbnail and frame == frames[0]:
            reasons.append("series sample")
        if reasons:
            context.review_images.append(ReviewImage(
                staged, frame, series, tuple(reasons),
                thumbnail_png(image, boxes), tuple(texts)))
