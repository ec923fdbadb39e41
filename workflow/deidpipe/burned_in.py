"""Screen staged files for text that may be burned into the pixels.

Two kinds of flag, each its own check so that their severities can differ:
- ``burned_in_annotation``: the file says so itself (BurnedInAnnotation = YES);
- ``burned_in_risk``: the file belongs to a class where burned-in text is common (secondary
  capture, ultrasound, screen saves, dose reports, derived secondary images), by SOP class and
  ImageType, or a graylist/blacklist rule of pydicom's ``deid`` filter list matches.
A whitelist rule of the filter list (for example 'BurnedInAnnotation NO') clears the risk.
"""

from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

# SOP classes where text in the image is common (PS3.4 storage SOP class UIDs).
RISKY_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.1": "Multi-frame Single Bit Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound",
    "1.2.840.10008.5.1.4.1.1.6.2": "Enhanced Ultrasound Volume",
    "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame",
    "1.2.840.10008.5.1.4.1.1.88.67": "X-Ray Radiation Dose Report",
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF",
}
RISKY_MODALITIES = {"US": "ultrasound", "SC": "secondary capture", "OT": "other (often "
                    "screen captures)", "DOC": "scanned document"}
SILENT = -10  # below every deid message level
RISKY_IMAGE_TYPE_VALUES = {"SCREEN SAVE", "SECONDARY", "SAVE", "SCREEN", "REPORTDATA"}


@dataclass
class Flag:
    check: str  # 'burned_in_annotation' or 'burned_in_risk'
    reason: str


def _text(dataset: Dataset, keyword: str) -> str:
    value = dataset.get(keyword)
    return "" if value is None else str(value)


@dataclass
class BurnedInScreen:
    """Evaluates the rules; results are remembered by the values the rules look at, because
    the files of one series nearly always share them."""

    use_filter_list: bool = True
    _recipe: Any = None
    _fields: tuple[str, ...] = ()
    _memo: dict[tuple[str, ...], list[Flag]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.use_filter_list:
            # Slow imports (matplotlib), only when used; done here rather than at the first
            # image so that worker processes forked later inherit them.
            import deid.dicom.pixels.detect  # noqa: F401
            from deid.config import DeidRecipe
            from deid.logger import bot

            # deid prints its own messages, some with values: silence them all.
            bot.level = SILENT
            self._recipe = DeidRecipe("dicom")
            fields = {"BurnedInAnnotation", "SOPClassUID", "Modality", "ImageType"}
            for items in self._recipe.get_filters().values():
                for item in items:
                    for group in item.get("filters", []):
                        fields.update(group.get("field", []))
            self._fields = tuple(sorted(fields))
        else:
            self._fields = ("BurnedInAnnotation", "ImageType", "Modality", "SOPClassUID")

    def flags(self, dataset: Dataset) -> list[Flag]:
        key = tuple(_text(dataset, name) for name in self._fields)
        if key not in self._memo:
            self._memo[key] = self._evaluate(dataset)
        return self._memo[key]

    def _evaluate(self, dataset: Dataset) -> list[Flag]:
        found = []
        if _text(dataset, "BurnedInAnnotation").strip().upper() == "YES":
            found.append(Flag("burned_in_annotation",
                              "BurnedInAnnotation (0028,0301) is YES: the image itself "
                              "says it holds burned-in text"))
        risks = []
        sop_class = _text(dataset, "SOPClassUID")
        if sop_class in RISKY_SOP_CLASSES:
            risks.append(f"SOP class is {RISKY_SOP_CLASSES[sop_class]}")
        modality = _text(dataset, "Modality").strip().upper()
        if modality in RISKY_MODALITIES:
            risks.append(f"Modality is {modality} ({RISKY_MODALITIES[modality]})")
        risky_types = sorted(_image_type_values(dataset) & RISKY_IMAGE_TYPE_VALUES)
        if risky_types:
            risks.append(f"ImageType includes {', '.join(risky_types)}")
        filter_rules, cleared = self._filter_list(dataset)
        risks.extend(filter_rules)
        if risks and not (cleared and not found):
            found.append(Flag("burned_in_risk", "; ".join(risks)))
        return found

    def is_risky_class(self, dataset: Dataset) -> bool:
        """An image of a class where text is often burned in (SOP class, Modality, ImageType,
        or BurnedInAnnotation YES), whatever deid's whitelist says: OCR reads all of these."""
        return (_text(dataset, "BurnedInAnnotation").strip().upper() == "YES"
                or _text(dataset, "SOPClassUID") in RISKY_SOP_CLASSES
                or _text(dataset, "Modality").strip().upper() in RISKY_MODALITIES
                or bool(_image_type_values(dataset) & RISKY_IMAGE_TYPE_VALUES))

    def _filter_list(self, dataset: Dataset) -> tuple[list[str], bool]:
        """deid's rules that match: (graylist/blacklist reasons, whether a whitelist matched)."""
        if self._recipe is None:
            return [], False
        from deid.dicom.pixels.detect import has_burned_pixels

        result = has_burned_pixels(dataset, deid=self._recipe)
        reasons = [f"deid filter list ({hit['group']}): {_readable(hit['reason'])}"
                   for hit in result["results"] if hit["group"] != "whitelist"]
        cleared = any(hit["group"] == "whitelist" for hit in result["results"])
        return reasons, cleared


def _image_type_values(dataset: Dataset) -> set[str]:
    image_type = dataset.get("ImageType")
    if image_type is not None and not isinstance(image_type, str):
        return {str(value).strip().upper() for value in image_type}
    return {str(image_type or "").strip().upper()}


def _readable(reason: str) -> str:
    """deid's reason ('and Modality contains CT ...') without its leading operator."""
    words = reason.split()
    if words and words[0] in ("and", "or"):
        words = words[1:]
    return " ".join(words)
