"""Identifier values of a session's source files, and finding them again in staged data.

Values are collected from the source (never written anywhere) and turned into *needles*:
token sequences folded for case and punctuation. A needle matches text when its tokens,
joined, equal a run of whole tokens of the text, so 'MRN-4041' matches 'mrn4041' and
'MRN 4041' but not the middle of a longer number such as a UID component.

An identifier of six characters or more that holds digits (an MRN, an accession number, a
date) is also found glued inside a longer token ('MRN40417723' in 'PATMRN40417723'), but never
inside a longer run of digits (a UID component, a longer number). A name written with
initials ('A. Testperson', 'Testperson, A Q') is a full name; the initials must be written as
capitals, so that the article in 'a brain scan' is not taken for one.

Three strengths, each reported by its own check:
- ``identifier``: a patient identifier (IDs, birth date in any common format, address,
  telephone, the patient's full name in any order, with or without initials);
- ``name_part``: one component (three letters or more) of a patient name on its own, weaker;
- ``staff_name``: the full name of anyone else in a PN attribute (operator, physician).
"""

import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Set
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from itertools import accumulate, permutations
from typing import Any

import ahocorasick
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from deidpipe.dicom.datasets import keyword_of

# Attributes whose values identify the patient, besides every PN.
IDENTIFIER_KEYWORDS = (
    "PatientID", "OtherPatientIDs", "IssuerOfPatientID", "AccessionNumber", "PatientBirthDate",
    "PatientAddress", "PatientTelephoneNumbers", "MedicalRecordLocator",
)
# PN attributes that name the patient or their family; every other PN names staff.
PATIENT_NAME_KEYWORDS = frozenset({
    "PatientName", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName",
    "ResponsiblePerson",
})
# Values with fewer letters and digits than this are not searched: "1" or "--" would match
# everywhere and mean nothing. The report counts how many were left out.
MIN_SEARCHABLE_CHARACTERS = 3
TOKEN = re.compile(r"[^\W_]+")
DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
NAME_SEPARATORS = re.compile(r"[\^=]")
# Separators tried between a needle's tokens when searching raw bytes.
RAW_SEPARATORS = ("", " ", "^", ",", ", ", "-", "/", ".", "_")
KIND_ORDER = {"identifier": 0, "staff_name": 1, "name_part": 2}
SHORT_NUMBER_DIGITS = 8
# Bytes either side of a needle's longest token that its other tokens may take (at least).
ANCHOR_WINDOW = 64
# Between the tokens of a value written in raw bytes: what people type between words (spaces
# and ASCII punctuation), not the binary bytes of element headers, so that two neighbouring
# elements holding a part each are not read as one value.
RAW_TEXT_SEPARATOR = r"[ -/:-@\[-`{-~]"
# Identifiers at least this long that hold a digit are also looked for inside longer tokens.
GLUED_MIN_CHARACTERS = 6
MONTH_NAMES = ("january", "february", "march", "april", "may", "june", "july", "august",
               "september", "october", "november", "december")
# Day numbers as people write them in words: '23rd September 1958'.
ORDINAL_SUFFIXES = ("", "st", "nd", "rd", "th")
WORD_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789")
DIGIT_BYTES = frozenset(b"0123456789")
NUMBER_BYTES = frozenset(b".")


def tokens_of(text: str) -> list[str]:
    """Letters-and-digits runs of ``text``, case-folded: 'Doe^John' -> ['doe', 'john']."""
    return TOKEN.findall(text.casefold())


def normalise(text: str) -> str:
    """Case, separators and whitespace folded away: 'DOE, John' -> 'doejohn'."""
    return "".join(tokens_of(text))


@dataclass(frozen=True)
class Needle:
    """One searchable form of a source value. The value itself is never reported."""

    tokens: tuple[str, ...]
    attribute: str  # the source attribute it came from, e.g. 'PatientName'
    kind: str  # 'identifier', 'name_part' or 'staff_name'
    # Indexes of tokens that are a name's initials: they match only when written as capitals.
    initials: tuple[int, ...] = ()

    # Cached: the matcher asks for these for every needle at every candidate place.
    @cached_property
    def folded(self) -> str:
        return "".join(self.tokens)

    @cached_property
    def may_be_glued(self) -> bool:
        """An ID-like value long enough to be told apart inside a longer token."""
        folded = self.folded
        return len(folded) >= GLUED_MIN_CHARACTERS and any(c.isdigit() for c in folded)

    def written_in(self, text: str) -> bool:
        """For a name with initials: the initials are capitals where ``text`` holds it."""
        return not self.initials or _tokens_pattern(self).search(text) is not None

    def raw_forms(self) -> set[bytes]:
        """The needle as it may be written in bytes (lower case), for the raw-byte scan."""
        return {separator.join(self.tokens).encode("utf-8") for separator in RAW_SEPARATORS}


def date_forms(value: str) -> list[tuple[str, ...]]:
    """A DICOM date (YYYYMMDD) as people write it: ISO, US and European, padded or not, and
    with the month as a word ('23-Sep-1958', 'September 23, 1958', '23rd Sept 58'). Two-digit
    years only beside a month name, where the order cannot be mistaken."""
    match = DATE.match(value.strip())
    if not match:
        return [tuple(tokens_of(value))]
    year, month, day = match.groups()
    forms = {(year, month, day), (month, day, year), (day, month, year),
             (str(int(month)), str(int(day)), year), (str(int(day)), str(int(month)), year),
             (year + month + day,)}
    if 1 <= int(month) <= 12:
        full_name = MONTH_NAMES[int(month) - 1]
        month_words = {full_name, full_name[:3]} | ({"sept"} if full_name == "september" else set())
        days = {day, str(int(day))}
        written_days = {number + suffix for number in days for suffix in ORDINAL_SUFFIXES}
        for word in month_words:
            forms.add((year, word, day))
            for written_year in (year, year[2:]):
                for written_day in written_days:
                    forms.add((written_day, word, written_year))
                    forms.add((word, written_day, written_year))
    return sorted(forms)


def name_forms(value: str) -> tuple[list[tuple[str, ...]], list[str]]:
    """A PN value's full-name orders ('Given Family', 'Family, Given' ...) and its parts.

    Only the family, given and middle components are reordered; prefix and suffix are left
    out of the full forms (a 'Dr' or 'Jr' is often dropped when a name is retyped).
    """
    components = [tokens_of(component) for component in NAME_SEPARATORS.split(value)]
    family_given = [component for component in components[:2] if component]
    with_middle = [component for component in components[:3] if component]
    full_forms = {tuple(token for component in order for token in component)
                  for names in (family_given, with_middle) for order in permutations(names)}
    parts = [token for component in components for token in component
             if sum(character.isalpha() for character in token) >= MIN_SEARCHABLE_CHARACTERS]
    return sorted(form for form in full_forms if form), parts


def initial_forms(value: str) -> list[tuple[tuple[str, ...], tuple[int, ...]]]:
    """A PN value written with the family name in full and the given (and middle) names as
    initials: 'A. Testperson', 'A Q Testperson', 'Alice Q. Testperson', 'Testperson, A.'.
    Each form comes with the indexes of its initials (they must be capitals to match)."""
    components = [tokens_of(component) for component in NAME_SEPARATORS.split(value)]
    family = components[0] if components else []
    given = components[1] if len(components) > 1 else []
    middle = components[2] if len(components) > 2 else []
    if not family or not given:
        return []
    given_initial, middle_initial = [given[0][0]], [middle[0][0]] if middle else []
    forenames = {(tuple(given_initial), (0,))}
    if middle_initial:
        forenames.add((tuple(given_initial + middle_initial), (0, 1)))
        forenames.add((tuple(given + middle_initial), (len(given),)))
    forms = set()
    for names, initials in forenames:
        forms.add(((*names, *family), initials))  # 'A. Q. Testperson'
        forms.add(((*family, *names), tuple(len(family) + index for index in initials)))
    return sorted(forms)


def _element_values(element: DataElement) -> list[str]:
    value = element.value
    if value is None or value == "":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [str(part) for part in value if str(part)]
    return [str(value)]


# The sequences an element sits in, outermost first, each with the item number (from 1).
Nesting = tuple[tuple[DataElement, int], ...]


def iter_elements(dataset: Dataset, nesting: Nesting = (),
                  wanted: Callable[[RawDataElement], bool] | None = None
                  ) -> Iterator[tuple[Nesting, DataElement]]:
    """Every element that is not a sequence, at any depth, in tag order, with the sequence
    items it is in. ``wanted``: a filter on elements pydicom has not converted yet (the others
    are skipped unconverted, which saves most of the reading time)."""
    for stored in sorted(dataset.values(), key=_tag_of):
        if isinstance(stored, RawDataElement):
            if wanted is not None and not wanted(stored):
                continue
            element = dataset[stored.tag]  # converts the value
        else:
            element = stored
        if element.VR == "SQ":
            for number, item in enumerate(element.value or [], start=1):
                yield from iter_elements(item, (*nesting, (element, number)), wanted)
            continue
        yield nesting, element


def _tag_of(element: DataElement | RawDataElement) -> int:
    return element.tag


@dataclass
class IdentifierSet:
    """The needles of one session, gathered from every source file."""

    extra_keywords: tuple[str, ...] = ()
    # One needle per written form and kind, in the order first seen (its attribute names it).
    needles: dict[tuple[tuple[str, ...], str], Needle] = field(default_factory=dict)
    # Distinct (attribute, folded value) pairs searched for: the count the report gives.
    values: set[tuple[str, str]] = field(default_factory=set)
    # Distinct values too short to search (counted in the report, never written).
    too_short: set[str] = field(default_factory=set)

    def add_dataset(self, dataset: Dataset) -> None:
        """Add the identifying values of one source dataset (kept in memory only)."""
        def may_identify(raw: RawDataElement) -> bool:
            return self.may_identify(int(raw.tag), raw.VR)

        self.add_elements(((tuple(sequence.keyword or str(sequence.tag)
                                  for sequence, _number in nesting), element)
                           for nesting, element in iter_elements(dataset, wanted=may_identify)))

    def may_identify(self, tag: int, vr: str | None) -> bool:
        """Whether an element, from its tag and the VR its file gives (None: implicit), can
        hold an identifying value: names (PN), sequences (they hold elements), the identifier
        keywords, and what the file does not type (implicit VR, UN). Only these are converted
        and looked at."""
        return vr in (None, "UN", "PN", "SQ") or tag in self._wanted_tags

    @cached_property
    def _wanted_tags(self) -> frozenset[int]:
        return frozenset(tag for keyword in self._wanted() if (tag := tag_for_keyword(keyword)))

    def add_elements(self, elements: Iterable[tuple[tuple[str, ...], DataElement]]) -> None:
        """Add the identifying values of a source's elements, each with the names of the
        sequences it sits in (``keyword`` or tag), outermost first."""
        wanted = self._wanted()
        for parents, element in elements:
            keyword = keyword_of(int(element.tag))
            if element.VR == "PN":
                attribute = " > ".join((*parents, keyword or str(element.tag)))
                how = "patient name" if keyword in PATIENT_NAME_KEYWORDS else "staff name"
            elif keyword in wanted:
                attribute = " > ".join((*parents, keyword))
                how = "date" if element.VR == "DA" else "identifier"
            else:
                continue
            for value in _element_values(element):
                self.merge(_value_effect(attribute, value, how))

    def _add_value(self, attribute: str, value: str, how: str) -> None:
        self._count(attribute, value)
        if how in ("patient name", "staff name"):
            self._add_name(value, attribute, how == "patient name")
            return
        for form in date_forms(value) if how == "date" else [tuple(tokens_of(value))]:
            self._add(form, attribute, "identifier")

    def _wanted(self) -> set[str]:
        return set(IDENTIFIER_KEYWORDS) | set(self.extra_keywords)

    def _count(self, attribute: str, value: str) -> None:
        folded = normalise(value)
        if len(folded) >= MIN_SEARCHABLE_CHARACTERS:
            self.values.add((attribute, folded))

    def _add_name(self, value: str, attribute: str, is_patient: bool) -> None:
        full_forms, parts = name_forms(value)
        kind = "identifier" if is_patient else "staff_name"
        for form in full_forms:
            self._add(form, attribute, kind)
        for form, initials in initial_forms(value):
            self._add(form, attribute, kind, initials)
        if is_patient:
            for part in parts:
                self._add((part,), attribute, "name_part")

    def _add(self, tokens: tuple[str, ...], attribute: str, kind: str,
             initials: tuple[int, ...] = ()) -> None:
        folded = "".join(tokens)
        if len(folded) < MIN_SEARCHABLE_CHARACTERS:
            if folded:
                self.too_short.add(folded)
            return
        self.needles.setdefault((tokens, kind), Needle(tokens, attribute, kind, initials))

    def merge(self, other: "IdentifierSet") -> None:
        """Add what another set gathered (from later files: the needles seen first stay)."""
        for key, needle in other.needles.items():
            self.needles.setdefault(key, needle)
        self.values |= other.values
        self.too_short |= other.too_short

    def matcher(self) -> "Matcher":
        return Matcher(sorted(self.needles.values(), key=lambda needle: (needle.kind, needle.folded,
                                                                 needle.attribute)))


# (attribute, value, how it is read) -> the needles and counts it adds: the files of a
# session repeat their identifying values, and name forms take time to make.
_value_effects: dict[tuple[str, str, str], IdentifierSet] = {}
VALUE_EFFECTS_KEPT = 50_000


def _value_effect(attribute: str, value: str, how: str) -> IdentifierSet:
    key = (attribute, value, how)
    effect = _value_effects.get(key)
    if effect is None:
        effect = IdentifierSet()
        effect._add_value(attribute, value, how)
        if len(_value_effects) < VALUE_EFFECTS_KEPT:
            _value_effects[key] = effect
    return effect


TEXT_RESULTS_KEPT = 200_000  # distinct element texts whose search result a process keeps


@dataclass
class Matcher:
    """Finds needles in text (token-aligned) and in raw bytes."""

    needles: list[Needle]

    def __post_init__(self) -> None:
        # One needle per folded text, the strongest kind first: a name part or staff name
        # equal to a patient identifier adds nothing. The token layouts of all needles with
        # that folded text are kept for short numbers, which must match token for token.
        self.by_folded: dict[str, Needle] = {}
        self.layouts: dict[str, set[tuple[int, ...]]] = {}
        raw_forms: dict[str, set[bytes]] = {}
        for needle in sorted(self.needles, key=lambda needle: KIND_ORDER[needle.kind]):
            self.by_folded.setdefault(needle.folded, needle)
            self.layouts.setdefault(needle.folded, set()).add(
                tuple(accumulate(map(len, needle.tokens)))[:-1])
            raw_forms.setdefault(needle.folded, set()).update(needle.raw_forms())
        self.raw_needles = [(needle, raw_forms[folded])
                            for folded, needle in self.by_folded.items()
                            if needle.kind != "name_part" and not needle.initials]
        # The raw forms join a needle's tokens with one separator throughout; people mix them
        # ('Alice Q. Testperson', 'September 23, 1958', '42 Imaginary Lane, Nowhereville'), and
        # initials are told from words by case, which the lower-cased bytes do not show. So the
        # automaton also finds each multi-token needle's longest token (an anchor), and around
        # it the needle is matched as in element text: its tokens in order, any separators
        # between them, initials as capitals, in the original bytes.
        self.needles_by_anchor: dict[str, list[Needle]] = {}
        for needle in self.by_folded.values():
            if (len(needle.tokens) > 1 and needle.kind != "name_part"
                    and not is_short_number(needle.folded)):
                anchor = max((token for index, token in enumerate(needle.tokens)
                              if index not in needle.initials), key=len)
                self.needles_by_anchor.setdefault(anchor, []).append(needle)

    def find(self, text: str) -> list[Needle]:
        """Needles whose tokens equal a run of whole tokens in ``text``."""
        return self.find_each([text]).get(0, [])

    def find_in_texts(self, texts: Iterable[str], numeric: Set[int] = frozenset()
                      ) -> dict[int, list[Needle]]:
        """Needles found in each text, by index: all texts folded and searched in one pass.

        Short numbers are not searched in the texts whose index is in ``numeric`` (values of
        numeric VRs, where '1001' is a measurement, not an ID).
        """
        texts = list(texts)
        folded_parts: list[str] = []
        token_ends: set[int] = set()
        text_starts: list[int] = []
        position = 0
        for text in texts:
            tokens = tokens_of(text)
            text_starts.append(position)
            token_ends.add(position)
            token_ends.update(position + end for end in accumulate(map(len, tokens)))
            folded_parts.append("".join(tokens))
            position += len(folded_parts[-1])
        folded = "".join(folded_parts)
        text_ends = [start + len(part) for start, part in zip(text_starts, folded_parts,
                                                                strict=True)]
        found: dict[int, list[Needle]] = {}
        for target, needle in self.by_folded.items():
            strict = is_short_number(target)
            glued = needle.may_be_glued
            start = folded.find(target)
            while start >= 0:
                end = start + len(target)
                if (_bounded(folded, start, end, token_ends, glued)
                        and (not strict or self._same_layout(target, start, token_ends))):
                    index = _text_index(text_starts, start)
                    # A match must lie inside one text, not straddle two.
                    if (end <= text_ends[index] and needle not in found.get(index, ())
                            and not (strict and index in numeric)
                            and needle.written_in(texts[index])):
                        found.setdefault(index, []).append(needle)
                start = folded.find(target, start + 1)
        return {index: _strongest_per_attribute(needles) for index, needles in found.items()}

    def find_each(self, texts: list[str], numeric: Set[int] = frozenset()
                  ) -> dict[int, list[Needle]]:
        """As ``find_in_texts``, remembering each text's result: a match never depends on
        the texts beside it, and the files of a session repeat most of their values."""
        cache: dict[tuple[str, bool], list[Needle]] = self.__dict__.setdefault(
            "_text_results", {})
        found: dict[int, list[Needle]] = {}
        missing = []
        for index, text in enumerate(texts):
            known = cache.get((text, index in numeric))
            if known is None:
                missing.append(index)
            elif known:
                found[index] = known
        if missing:
            searched = self.find_in_texts([texts[index] for index in missing],
                                          {position for position, index in enumerate(missing)
                                           if index in numeric})
            for position, index in enumerate(missing):
                needles = searched.get(position, [])
                if len(cache) < TEXT_RESULTS_KEPT:
                    cache[(texts[index], index in numeric)] = needles
                if needles:
                    found[index] = needles
        return dict(sorted(found.items()))

    def find_in_ocr_text(self, text: str) -> list[Needle]:
        """Needles in text read from pixels, tolerant of OCR's confusions (O/0, I/1/l, S/5,
        B/8...) and dropped spaces: a needle of six characters or more may sit inside a
        recognised token (one that holds letters even beside digits, as OCR runs 'MRN40417723
        23-SEP-1958' together; an all-digit one never inside a longer run of digits); a
        shorter one must be a whole token. Initials are not told apart by case here (OCR's
        case is unreliable)."""
        tokens = tokens_of(text)
        folded = "".join(tokens)
        canonical = ocr_fold(folded)
        token_ends = {0, *accumulate(map(len, tokens))}
        found: list[Needle] = []
        for target, needle in self.by_folded.items():
            glued = len(target) >= OCR_GLUED_MIN_CHARACTERS
            for match in _ocr_pattern(needle).finditer(canonical):
                start, end = match.span(1)
                if (not is_short_number(target) or self._same_layout(target, start, token_ends)
                        ) and (_bounded(folded, start, end, token_ends, glued) or (
                            glued and not target.isdigit())):
                    found.append(needle)
                    break
        return _strongest_per_attribute(found)

    def _same_layout(self, target: str, start: int, token_ends: set[int]) -> bool:
        """A short number matches only as the same tokens ('1234', or '12-34' as written),
        not as a run of other numbers that happen to join into it ('1.2.3.4' in a UID)."""
        inner = tuple(offset for offset in range(1, len(target)) if start + offset in token_ends)
        return inner in self.layouts[target]

    def find_in_bytes(self, data: bytes) -> list[tuple[Needle, int]]:
        """Every place a needle is written in ``data`` (case-insensitive) between
        non-alphanumeric bytes: (needle, offset), by offset. The caller decides which element,
        if any, holds each offset. All written forms are searched in one pass (Aho-Corasick)
        over the bytes read as Latin-1, which keeps every offset."""
        automaton = self._raw_automaton()
        if automaton is None:
            return []
        lowered = data.lower()
        hits = set()
        for end, (index, form, anchor) in automaton.iter(lowered.decode("latin-1")):
            offset = end - len(form) + 1
            if anchor:
                hits.update(self._written_around(data, offset, len(form), anchor))
            if index < 0:
                continue
            needle = self.raw_needles[index][0]
            if _bounded_at(lowered, offset, form, is_short_number(needle.folded),
                           needle.may_be_glued):
                hits.add((needle, offset))
        return sorted(hits, key=lambda hit: (hit[1], hit[0].folded))

    def _written_around(self, data: bytes, offset: int, length: int, anchor: str
                        ) -> list[tuple[Needle, int]]:
        """The needles anchored at the token ``anchor`` (``length`` bytes at ``offset``), as
        written in the original bytes around it: (needle, offset where it starts)."""
        hits = []
        for needle in self.needles_by_anchor[anchor]:
            reach = max(ANCHOR_WINDOW, 2 * len(needle.folded))
            start = max(0, offset - reach)
            window = data[start:offset + length + reach].decode("latin-1")
            hits += [(needle, start + match.start())
                     for match in _tokens_pattern(needle, RAW_TEXT_SEPARATOR).finditer(window)]
        return hits

    def _raw_automaton(self) -> Any:
        """One automaton of every raw form: each word maps to (index of the raw needle or -1,
        the form, and the token it is the anchor of, if any)."""
        if not hasattr(self, "_automaton"):
            automaton = None
            words: dict[str, tuple[int, bytes, str]] = {}
            for index, (_needle, needle_forms) in enumerate(self.raw_needles):
                for form in sorted(needle_forms):
                    # Forms of different needles can coincide: keep the first, strongest.
                    words.setdefault(form.decode("latin-1"), (index, form, ""))
            for anchor in self.needles_by_anchor:
                key = anchor.encode("utf-8").decode("latin-1")
                index, form, _ = words.get(key, (-1, anchor.encode("utf-8"), ""))
                words[key] = (index, form, anchor)
            if words:
                automaton = ahocorasick.Automaton()
                for key, value in sorted(words.items()):
                    automaton.add_word(key, value)
                automaton.make_automaton()
            self._automaton = automaton
        return self._automaton


# What OCR confuses, folded to one character on both sides: O/0, I/l/1, S/5, B/8, Z/2, G/6.
OCR_CONFUSIONS = str.maketrans({"o": "0", "i": "1", "l": "1", "s": "5", "b": "8", "z": "2",
                                "g": "6"})
# OCR drops spaces: a needle at least this long is looked for inside a recognised token too.
OCR_GLUED_MIN_CHARACTERS = 6


def ocr_fold(text: str) -> str:
    """Folded text with OCR's usual confusions mapped to one character."""
    return text.translate(OCR_CONFUSIONS)


def is_short_number(folded: str) -> bool:
    """Digits only and shorter than a full date: such values occur by chance in numbers."""
    return folded.isdigit() and len(folded) < SHORT_NUMBER_DIGITS


def _bounded(folded: str, start: int, end: int, token_ends: set[int], glued: bool) -> bool:
    """A match of whole tokens; for an ID-like needle (``glued``) also one inside a longer
    token, unless it continues a run of digits there ('4041772' is not in '40417723')."""
    if start in token_ends and end in token_ends:
        return True
    if not glued:
        return False
    digits_before = start not in token_ends and folded[start].isdigit() and (
        folded[start - 1].isdigit())
    digits_after = end not in token_ends and folded[end - 1].isdigit() and folded[end].isdigit()
    return not digits_before and not digits_after


def _bounded_at(data: bytes, offset: int, form: bytes, number: bool, glued: bool) -> bool:
    """``form`` at ``offset`` is not inside a longer word (or number, for numbers: '1234' is
    not found in '0.12345' or '1.1234'). An ID-like form (``glued``) may touch letters, but
    never continue a run of digits."""
    before = data[offset - 1] if offset > 0 else None
    after = data[offset + len(form)] if offset + len(form) < len(data) else None
    if glued:
        digits = DIGIT_BYTES | (NUMBER_BYTES if number else frozenset())
        return not (form[0] in DIGIT_BYTES and before in digits) and not (
            form[-1] in DIGIT_BYTES and after in digits)
    joined = WORD_BYTES | (NUMBER_BYTES if number else frozenset())
    return before not in joined and after not in joined


@lru_cache(maxsize=4096)
def _ocr_pattern(needle: Needle) -> re.Pattern[str]:
    """The needle's tokens, OCR-folded, with room for one misread character between them
    (OCR reads the '^' of 'FAMILY^GIVEN' as 'A', or a stray mark)."""
    return re.compile("(?=(" + ".?".join(re.escape(ocr_fold(token)) for token in needle.tokens)
                      + "))")


@lru_cache(maxsize=4096)
def _tokens_pattern(needle: Needle, separator: str = r"[\W_]") -> re.Pattern[str]:
    """The needle's tokens in order, any ``separator`` characters between them, not inside a
    longer word; initials as capitals."""
    parts = [f"(?-i:{re.escape(token.upper())})" if index in needle.initials
             else re.escape(token) for index, token in enumerate(needle.tokens)]
    return re.compile(r"(?<![^\W_])" + f"{separator}*".join(parts) + r"(?![^\W_])",
                      re.IGNORECASE)


def _strongest_per_attribute(needles: list[Needle]) -> list[Needle]:
    """One needle per source attribute: the strongest kind found (a full name over its parts)."""
    best: dict[str, Needle] = {}
    for needle in needles:
        held = best.get(needle.attribute)
        if held is None or KIND_ORDER[needle.kind] < KIND_ORDER[held.kind]:
            best[needle.attribute] = needle
    return list(best.values())


def _text_index(text_starts: list[int], position: int) -> int:
    """Index of the text a folded position belongs to (the last one starting at or before it;
    empty texts share their start with the next one and never hold a match)."""
    return bisect_right(text_starts, position) - 1
