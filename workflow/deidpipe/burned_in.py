"""Screen staged files for text that may be burned into the pixels.

Two kinds of flag, each its own check so that their severities can differ:
- ``burned_in_annotation``: the file says so itself (BurnedInAnnotation = YES);
- ``burned_in_risk``: the file belongs to a class where burned-in text is common (secondary
  capture, ultrasound, screen saves, dose reports, derived secondary images), by SOP class and
  ImageType, or a graylist/blacklist rule of pydicom's ``deid`` filter list matches.
A whitelist rule of the filter list (for example 'BurnedInAnnotation NO') clears the risk.
"""

import importlib.util
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.datadict import tag_for_keyword
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
    _rules: tuple["_Rule", ...] = ()
    _apply_filter: Callable[..., bool] | None = None
    _fields: tuple[str, ...] = ()
    _memo: dict[tuple[Any, ...], list[Flag]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.use_filter_list:
            # Done here rather than at the first image so that worker processes forked later
            # inherit the parsed list.
            from deid.config import DeidRecipe
            from deid.logger import bot

            # deid prints its own messages, some with values: silence them all.
            bot.level = SILENT
            self._rules = _prepare(DeidRecipe("dicom").get_filters() or {})
            self._apply_filter = _deid_apply_filter()
            fields = {"BurnedInAnnotation", "SOPClassUID", "Modality", "ImageType"}
            for rule in self._rules:
                for line in rule.lines:
                    fields.update(step[0] for step in line if isinstance(step, tuple))
            self._fields = tuple(sorted(fields))
        else:
            self._fields = ("BurnedInAnnotation", "ImageType", "Modality", "SOPClassUID")

    def flags(self, dataset: Dataset) -> list[Flag]:
        key = tuple(_field_state(dataset, name) for name in self._fields)
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
        risks.extend(_in_words(rule) for rule in filter_rules)
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

    def _filter_list(self, dataset: Dataset) -> tuple[list["_Rule"], bool]:
        """deid's rules that match: (the graylist and blacklist rules, whether a whitelist rule
        matched)."""
        if self._apply_filter is None:
            return [], False
        apply_filter = self._apply_filter
        # The same test recurs across rules (463 tests, 186 different ones in deid 0.4.13);
        # each only reads the dataset, so each is run once.
        tested: dict[tuple[str, str, str], bool] = {}

        def result(test: tuple[str, str, str]) -> bool:
            if test not in tested:
                name, action, value = test
                tested[test] = apply_filter(dicom=dataset, field=name, filter_name=action,
                                            value=value or None)
            return tested[test]

        hits = [rule for rule in self._rules if rule.matches(result)]
        cleared = any(rule.group == "whitelist" for rule in hits)
        return [rule for rule in hits if rule.group != "whitelist"], cleared


def _deid_apply_filter() -> Callable[..., bool]:
    """deid's own filter functions (deid/dicom/filter.py, which needs only pydicom and
    deid.logger). Imported by name it would first run deid.dicom's package init, which imports
    the pixel cleaner and with it matplotlib (0.5 s or more), so it is loaded from its file.
    Like deid's import, loading it adds deid's filter methods to pydicom's Dataset."""
    import deid

    path = Path(deid.__file__).parent / "dicom" / "filter.py"
    spec = importlib.util.spec_from_file_location("deidpipe._deid_dicom_filter", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load deid's filter functions from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    apply_filter: Callable[..., bool] = module.apply_filter
    return apply_filter


# One step of a line of a rule: a test (field, action, value) or the operator after one.
_Step = tuple[str, str, str] | str


@dataclass(frozen=True)
class _Rule:
    """One item of deid's filter list, prepared once. It matches, and its reason is worded
    (the tests compare it with deid's, less deid's leading operator), as in deid's
    ``_has_burned_pixels_single`` (deid/dicom/pixels/detect.py, which cannot be imported
    without matplotlib), quirks kept on purpose so that results stay deid's: the operator that
    starts a line ('+', '||') only enters deid's reason, the lines of an item are ANDed, and a
    missing or empty test takes no value, so later tests of its line take values by position."""

    group: str  # 'whitelist', 'graylist' or 'blacklist'
    reason: str
    lines: tuple[tuple[_Step, ...], ...]
    always: bool = False  # no tests but coordinates: deid flags every image

    def matches(self, result: Callable[[tuple[str, str, str]], bool]) -> bool:
        if self.always:
            return True
        flags = [_combine([step if isinstance(step, str) else result(step) for step in line])
                 for line in self.lines]
        return _combine(flags) is True


def _prepare(filters: Mapping[str, list[dict[str, Any]]]) -> tuple[_Rule, ...]:
    """deid's parsed filter list (``DeidRecipe.get_filters()``) as rules, in deid's order."""
    rules = []
    for group_name, items in filters.items():
        for item in items:
            if not item.get("filters") and item.get("coordinates"):
                rules.append(_Rule(group_name, item.get("name", ""), (), always=True))
                continue
            lines = []
            descriptions = []
            for group in item["filters"]:
                line: list[_Step] = []
                for a, action in enumerate(group["action"]):
                    name = group["field"][a]
                    value = group["value"][a] if len(group["value"]) > a else ""
                    line.append((name, action, value))
                    description = f"{name} {action} {value}"
                    if len(group["InnerOperators"]) > a:
                        line.append(group["InnerOperators"][a])
                        description = f"{description} {group['InnerOperators'][a]}"
                    descriptions.append(description)
                lines.append(tuple(line))
            rules.append(_Rule(group_name, " ".join(descriptions), tuple(lines)))
    return tuple(rules)


def _combine(flags: list[Any]) -> Any:
    """deid's ``evaluate_group``: left to right without precedence; a flag with no operator
    before it is ANDed with what came before."""
    steps: Iterator[Any] = iter(flags[1:] if flags and flags[0] in ("and", "or") else flags)
    flagged: Any = False
    first = True
    for step in steps:
        if step == "and":
            flagged = next(steps) and flagged
        elif step == "or":
            flagged = next(steps) or flagged
        else:
            flagged = step if first else flagged and step
        first = False
    return flagged


def _field_state(dataset: Dataset, name: str) -> tuple[bool, str | None]:
    """What the rules can see of one field, for the memo key: deid's 'missing' asks whether the
    value is None and its 'empty' whether the element is there with no value, so presence
    counts as well as the value's text."""
    if "0x" in name:  # deid's apply_filter reads these by number, which gives the element
        element = dataset.get(int(name, 0))
        return element is not None, None if element is None else str(element)
    tag = tag_for_keyword(name)
    if tag is None:  # not a keyword (deid's list has 'Manfacturer'): deid reads an attribute
        value = dataset.get(name)
        return False, None if value is None else str(value)
    if tag not in dataset:  # most are absent: cheaper than get(), which raises inside
        return False, None
    value = dataset[tag].value
    return True, None if value is None else str(value)


def _image_type_values(dataset: Dataset) -> set[str]:
    image_type = dataset.get("ImageType")
    if image_type is not None and not isinstance(image_type, str):
        return {str(value).strip().upper() for value in image_type}
    return {str(image_type or "").strip().upper()}


# What each of deid's lists holds, for a coordinator reading why an image was flagged.
LIST_IN_WORDS = {
    "blacklist": "kinds of image made to carry text (reports, screen captures, forms)",
    "graylist": "scanner models and image types known to burn text into set places"}


def _in_words(rule: "_Rule") -> str:
    """Why a rule of deid's filter list flagged an image, in words: 'it matches deid's list
    of ...: Modality is CT or MR, and ImageType contains DERIVED, SECONDARY or SAVE'."""
    lines = []
    for line in rule.lines:
        words = [step if isinstance(step, str) else _test_in_words(*step) for step in line]
        lines.append(" ".join(words))
    return (f"it matches deid's list of {LIST_IN_WORDS.get(rule.group, rule.group)}: "
            + ", and ".join(lines))


def _test_in_words(name: str, action: str, value: str) -> str:
    options = [option.strip() for option in value.split("|") if option.strip()]
    listed = (", ".join(options[:-1]) + " or " + options[-1]) if len(options) > 1 else value
    return {"contains": f"{name} contains {listed}", "equals": f"{name} is {listed}",
            "notcontains": f"{name} does not contain {listed}",
            "notequals": f"{name} is not {listed}", "missing": f"{name} is missing",
            "empty": f"{name} is empty", "present": f"{name} is there"
            }.get(action, f"{name} {action} {value}".strip())
