"""The burned-in screen: deid's filter list evaluated without matplotlib, with deid's results."""

import random
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset

from deidpipe.burned_in import LIST_IN_WORDS, BurnedInScreen, Flag, _in_words, _Rule

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
DOSE_REPORT = "1.2.840.10008.5.1.4.1.1.88.67"


def _readable(reason: str) -> str:
    """deid's reason ('and Modality contains CT ...') without its leading operator."""
    words = reason.split()
    if words and words[0] in ("and", "or"):
        words = words[1:]
    return " ".join(words)


class DeidDetect(BurnedInScreen):
    """The screen as it was: deid's own ``has_burned_pixels`` decides the filter list."""

    last_hits: list[tuple[str, str]] = []  # of the last dataset evaluated

    def __post_init__(self) -> None:
        super().__post_init__()
        from deid.config import DeidRecipe

        self._recipe = DeidRecipe("dicom")

    def hits(self, dataset: Dataset) -> list[tuple[str, str]]:
        from deid.dicom.pixels.detect import has_burned_pixels

        result = has_burned_pixels(dataset, deid=self._recipe)
        return [(hit["group"], _readable(hit["reason"])) for hit in result["results"]]

    def _filter_list(self, dataset: Dataset) -> tuple[list[Any], bool]:
        # deid decides which rules match; the screen words the rules it names.
        hits = self.last_hits = self.hits(dataset)
        rules = {(rule.group, _readable(rule.reason)): rule for rule in self._rules}
        return ([rules[hit] for hit in hits if hit[0] != "whitelist"],
                any(group == "whitelist" for group, _ in hits))


def new_dataset(**values: Any) -> FileDataset:
    # deid's has_burned_pixels reads anything that is not a FileDataset as a path.
    dataset = FileDataset("image.dcm", {}, file_meta=FileMetaDataset(), preamble=b"\0" * 128)
    for name, value in values.items():
        put(dataset, name, value)
    return dataset


def put(dataset: Dataset, name: str, value: Any) -> None:
    """Set a field the filter list reads, as its VR holds it; None leaves it out."""
    if value is None:
        return
    if tag_for_keyword(name) is None:  # deid's list names 'Manfacturer': an attribute to deid
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            setattr(dataset, name, value)
        return
    if dictionary_VR(name) in ("US", "SS", "UL", "SL"):
        if isinstance(value, list):
            value = [int(v) for v in value]
        else:
            value = int(value) if value else None  # '' stands for an element with no value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # values that do not fit the VR are part of the test
        setattr(dataset, name, value)


def filter_items() -> list[dict[str, Any]]:
    from deid.config import DeidRecipe

    return [item for items in DeidRecipe("dicom").get_filters().values() for item in items]


def compared_values() -> dict[str, list[str]]:
    """Per field, every value deid's filter list compares it with ('a|b' gives a and b)."""
    values: dict[str, list[str]] = {}
    for item in filter_items():
        for group in item["filters"]:
            with_value = [f for f, a in zip(group["field"], group["action"], strict=True)
                          if a in ("contains", "equals", "notcontains", "notequals")]
            for name, value in zip(with_value, group["value"], strict=False):
                for part in value.split("|"):
                    if part.strip() and part.strip() not in values.setdefault(name, []):
                        values[name].append(part.strip())
    return values


def satisfying(item: dict[str, Any]) -> FileDataset:
    """A dataset with every field an item compares given the (first) value it looks for."""
    wanted: dict[str, list[str]] = {}
    for group in item["filters"]:
        with_value = [f for f, a in zip(group["field"], group["action"], strict=True)
                      if a in ("contains", "equals")]
        for name, value in zip(with_value, group["value"], strict=False):
            wanted.setdefault(name, []).append(value.split("|")[0].strip())
    dataset = new_dataset()
    for name, values in wanted.items():
        try:
            put(dataset, name, values if len(values) > 1 else values[0])
        except ValueError:  # a number field compared with text: leave it out
            pass
    return dataset


def named_cases() -> Iterator[FileDataset]:
    """The kinds of image the screen meets, and the makers and models deid's graylist names."""
    yield new_dataset(Modality="US", SOPClassUID=US_IMAGE, Manufacturer="Philips",
                      ManufacturerModelName="iU22", ImageType=["ORIGINAL", "PRIMARY"])
    yield new_dataset(Modality="US", SOPClassUID=US_IMAGE, Manufacturer="GE Healthcare",
                      ManufacturerModelName="LOGIQE9", BurnedInAnnotation="YES")
    yield new_dataset(Modality="OT", SOPClassUID=SECONDARY_CAPTURE, ImageType=["DERIVED",
                      "SECONDARY"], ConversionType="WSD", Manufacturer="")
    yield new_dataset(Modality="SC", SOPClassUID=SECONDARY_CAPTURE, ImageType="SCREEN SAVE",
                      DateOfSecondaryCapture="", SecondaryCaptureDeviceManufacturer="")
    yield new_dataset(Modality="SR", SOPClassUID=DOSE_REPORT, Manufacturer="GE MEDICAL SYSTEMS")
    for burned_in in ("YES", "NO", "", None):
        for modality, sop_class in (("CT", CT_IMAGE), ("MR", MR_IMAGE)):
            yield new_dataset(Modality=modality, SOPClassUID=sop_class,
                              BurnedInAnnotation=burned_in, ImageType=["ORIGINAL", "PRIMARY"],
                              Manufacturer="SIEMENS", ManufacturerModelName="Skyra")
    for image_type in (["DERIVED", "SECONDARY"], ["ORIGINAL", "PRIMARY", "SCREEN SAVE"],
                       "SCREEN SAVE", ["DERIVED", "SECONDARY", "SCREEN SAVE"], "", None,
                       ["ORIGINAL", "PRIMARY", "LOCALIZER"], ["DERIVED", "PRIMARY", "REFORMAT"]):
        yield new_dataset(Modality="CT", SOPClassUID=CT_IMAGE, ImageType=image_type,
                          Manufacturer="GE MEDICAL SYSTEMS", ManufacturerModelName="LightSpeed VCT",
                          SeriesDescription="Dose Report", Rows=512, Columns=512)
    for model in ("Sensation 64", "SOMATOM Definition AS+", "LightSpeed VCT", "Discovery MR750"):
        for description in ("Localizer", "Enhancement", "3D", "Dose", "T1 AX"):
            yield new_dataset(Modality="CT", SOPClassUID=CT_IMAGE, ManufacturerModelName=model,
                              Manufacturer="SIEMENS" if "S" in model[:2] else "GE MEDICAL",
                              ImageType=["ORIGINAL", "PRIMARY", "LOCAL"],
                              SeriesDescription=description)
    yield new_dataset(Modality="CT", Manufacturer="GE", CommentsOnRadiationDose="DLP 512")
    yield new_dataset(Modality="CT", Manufacturer="GE", BurnedInAnnotation="YES",
                      ImageType=["ORIGINAL", "PRIMARY"])
    yield new_dataset(Rows=832, Columns=1024, Manfacturer="ADAC", ImageType="ORIGINAL")
    yield new_dataset(Modality="MR", ImageType=["DERIVED", "SECONDARY"], WindowWidth=["1", "2"])


def random_cases(count: int, seed: int) -> Iterator[FileDataset]:
    """Fields the filter list reads, each missing, empty or one of the values it tests for
    (sometimes within longer text, in other case, or several of them)."""
    rng = random.Random(seed)
    values = compared_values()
    values["BurnedInAnnotation"] = ["YES", "NO"]
    values["SOPClassUID"] = [CT_IMAGE, MR_IMAGE, US_IMAGE, SECONDARY_CAPTURE, DOSE_REPORT]
    numbers = {name for name in values if tag_for_keyword(name) is not None
               and dictionary_VR(name) in ("US", "SS", "UL", "SL")}
    for _ in range(count):
        dataset = new_dataset()
        for name in rng.sample(sorted(values), rng.randint(2, 9)):
            choice = rng.random()
            if choice < 0.1:
                value: Any = ""
            elif name in numbers:
                value = [v for v in values[name] if v.isdigit()] or ["0"]
                value = rng.choice(value)
            elif choice < 0.4 and name == "ImageType":
                value = rng.sample(values[name], rng.randint(2, min(4, len(values[name]))))
            elif choice < 0.55:
                value = f"{rng.choice(['x ', 'The '])}{rng.choice(values[name]).lower()} 2"
            else:
                value = rng.choice(values[name])
            try:
                put(dataset, name, value)
            except ValueError:
                pass
        yield dataset


@dataclass
class Case:
    dataset: FileDataset
    deid_hits: list[tuple[str, str]]  # (filter group, reason) from deid's has_burned_pixels
    flags: list[Flag]  # the screen's flags with deid's own detection


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    """Every kind of case, with what the screen made of it when deid itself decided."""
    reference = DeidDetect()
    found = []
    for dataset in ([*named_cases()] + [satisfying(item) for item in filter_items()]
                    + [*random_cases(400, seed=20250601)]):
        flags = reference._evaluate(dataset)
        found.append(Case(dataset, reference.last_hits, flags))
    return found


def test_filter_list_is_evaluated_without_matplotlib():
    code = textwrap.dedent("""
        import sys
        from pydicom.dataset import Dataset
        from deidpipe.burned_in import BurnedInScreen

        dataset = Dataset()
        dataset.Modality = "CT"
        dataset.Manufacturer = "GE MEDICAL SYSTEMS"
        dataset.SeriesDescription = "Dose Report"
        dataset.ImageType = ["ORIGINAL", "PRIMARY"]
        flags = BurnedInScreen(use_filter_list=True).flags(dataset)
        assert any("known to burn text into set places" in flag.reason for flag in flags), flags
        print(sorted(name for name in sys.modules
                     if name.split(".")[0] == "matplotlib" or name.startswith("deid.dicom")))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_cases_reach_most_of_the_filter_list(cases):
    """Otherwise the comparisons below would prove little: nearly every rule matches a case
    (the rest cannot match, such as 'equals Rows 600|768'), and there are cases of each
    outcome."""
    assert len(cases) > 500
    matched = {hit for case in cases for hit in case.deid_hits}
    assert len({group for group, _ in matched}) == 3
    assert len(matched) >= 105, len(matched)
    outcomes = {tuple(flag.check for flag in case.flags) for case in cases}
    assert outcomes == {(), ("burned_in_annotation",), ("burned_in_risk",),
                        ("burned_in_annotation", "burned_in_risk")}
    assert any(group == "whitelist" for case in cases for group, _ in case.deid_hits)


def test_filter_list_results_are_deids_own(cases):
    screen = BurnedInScreen()
    for case in cases:
        rules, cleared = screen._filter_list(case.dataset)
        assert [(rule.group, _readable(rule.reason)) for rule in rules] == [
            (group, reason) for group, reason in case.deid_hits if group != "whitelist"]
        assert cleared == any(group == "whitelist" for group, _ in case.deid_hits)


def test_flags_are_those_of_deids_detection_through_the_memo(cases):
    """One screen for all cases, as a verify job uses it: remembered results never stand in
    for a dataset that deid would judge otherwise."""
    screen = BurnedInScreen()
    for case in cases * 2:
        assert screen.flags(case.dataset) == case.flags


@pytest.mark.parametrize("burned_in,expected", [
    ("YES", [Flag("burned_in_annotation", "BurnedInAnnotation (0028,0301) is YES: the image "
                  "itself says it holds burned-in text"),
             Flag("burned_in_risk", "it matches deid's list of kinds of image made to carry "
                  "text (reports, screen captures, forms): Modality contains CT or MR, and "
                  "ImageType contains DERIVED, SECONDARY, SCREEN or SAVE; it matches deid's "
                  "list of kinds of image made to carry text (reports, screen captures, forms): "
                  "Modality contains CT or MR, and SeriesDescription contains Patient Protocol, "
                  "PACS nomination form, Dose Report or Study acquired outside hospital")]),
    ("NO", []),
])
def test_whitelist_clears_only_a_risk(burned_in, expected):
    dataset = new_dataset(Modality="MR", SOPClassUID=MR_IMAGE, BurnedInAnnotation=burned_in,
                          ImageType=["DERIVED", "PRIMARY"], SeriesDescription="Dose Report",
                          Manufacturer="SIEMENS")
    assert BurnedInScreen().flags(dataset) == expected


def test_without_the_filter_list_deid_is_not_read():
    screen = BurnedInScreen(use_filter_list=False)
    dataset = new_dataset(Modality="CT", Manufacturer="GE", SeriesDescription="Dose Report",
                          ImageType=["ORIGINAL", "PRIMARY"])
    assert screen.flags(dataset) == []
    assert screen.flags(new_dataset(Modality="US")) == [
        Flag("burned_in_risk", "Modality is US (ultrasound)")]


@pytest.mark.parametrize("lines,group,words", [
    (((("Modality", "contains", "CT|MR"),), (("ImageType", "contains", "SCREEN SAVE"),)),
     "blacklist", "Modality contains CT or MR, and ImageType contains SCREEN SAVE"),
    (((("Manufacturer", "missing", ""), "or", ("Manufacturer", "empty", "")),),
     "graylist", "Manufacturer is missing or Manufacturer is empty"),
    (((("Rows", "equals", "600|768|1024"),),), "graylist", "Rows is 600, 768 or 1024"),
], ids=["alternatives, two lines", "missing or empty", "equals one of three"])
def test_why_a_filter_list_rule_flagged_an_image_is_said_in_words(lines, group, words):
    rule = _Rule(group, "", lines)
    text = _in_words(rule)
    assert text == f"it matches deid's list of {LIST_IN_WORDS[group]}: {words}"
    assert "|" not in text and "deid filter list" not in text
