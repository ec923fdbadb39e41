"""The DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile, for the audit.

The table (attribute tags and the action the standard gives each: D, Z, X, U and their
combinations) comes from the ``dicom-anonymizer`` package's transcription of Table E.1-1.
The audit is informational: a site profile keeps many of these on purpose.
"""

from collections.abc import Callable, Iterable
from functools import cache, lru_cache

from pydicom.datadict import keyword_for_tag
from pydicom.tag import Tag

STANDARD_EDITION = "dicomfields_2026c"
ACTION_OF_CATEGORY = {
    "D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z", "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D", "X_Z_U_STAR_TAGS": "X/Z/U*",
}
ACTION_MEANING = {"D": "replace with a dummy value", "Z": "empty or dummy", "X": "remove",
                  "U": "replace the UID", "Z/D": "empty or dummy", "X/Z": "remove or empty",
                  "X/D": "remove or dummy", "X/Z/D": "remove, empty or dummy",
                  "X/Z/U*": "remove, empty or replace UIDs"}


@cache
def basic_profile_actions() -> tuple[dict[int, str], list[tuple[int, int, int, int, str]]]:
    """Tag (as int) -> the Basic Profile's action code; and the repeating-group entries
    (group, element, group mask, element mask, action) such as overlays (60xx,3000)."""
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector

    table = dicom_anonymization_database_selector(STANDARD_EDITION)
    actions: dict[int, str] = {}
    masked: list[tuple[int, int, int, int, str]] = []
    for category, code in ACTION_OF_CATEGORY.items():
        for entry in table[category]:
            if len(entry) == 2:
                actions.setdefault(int(Tag(entry[0], entry[1])), code)
            else:
                group, element, group_mask, element_mask = entry
                masked.append((group, element, group_mask, element_mask, code))
    return actions, masked


@lru_cache(maxsize=16384)
def basic_profile_action(tag: int) -> str | None:
    """The Basic Profile's action for a tag, or None if the profile does not list it."""
    actions, masked = basic_profile_actions()
    if tag in actions:
        return actions[tag]
    group, element = tag >> 16, tag & 0xFFFF
    for masked_group, masked_element, group_mask, element_mask, code in masked:
        if group & group_mask == masked_group and element & element_mask == masked_element:
            return code
    return None


def populated_basic_profile_tags(tags: Iterable[int], is_empty: Callable[[int], bool]
                                 ) -> list[tuple[int, str]]:
    """(tag, action) of the Basic Profile attributes among a data set's top-level ``tags``
    still holding a value (``is_empty`` is asked only of Basic Profile attributes)."""
    populated = []
    for tag in tags:
        if tag >> 16 & 1:
            continue
        action = basic_profile_action(tag)
        if action and not is_empty(tag):
            populated.append((tag, action))
    return populated


def describe_tag(tag: int) -> tuple[str, str]:
    """(keyword, '(GGGG,EEEE)') of a tag."""
    as_tag = Tag(tag)
    return (keyword_for_tag(as_tag) or "unknown attribute",
            f"({as_tag.group:04X},{as_tag.element:04X})")
