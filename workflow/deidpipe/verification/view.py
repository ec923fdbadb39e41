"""A DICOM file as the checks see it (``FileView``): its elements at any depth with their text,
tag path and place in the file, and its top-level elements by tag.

Most files are read with the project's reader (``RecordView``): each element's value is
converted by pydicom once per process and value, and the files of a series share most of their
header, so a file costs little more than the reader's walk. A file the reader does not stand
for exactly is read by pydicom (``DatasetView``), and the checks see the same thing either way.
A whole pydicom Dataset is built only for the checks that need one (pixel data for OCR, an
encapsulated document, a differing sequence).
"""

import io
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property

from pydicom import dcmread
from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import private_dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

from deidpipe.dicom.datasets import (
    MEMO_LIMIT,
    SPECIFIC_CHARACTER_SET,
    NotPlain,
    keyword_of,
    read_file,
    read_sequence,
)
from deidpipe.dicom.reader import (
    FIRST_IMAGE_DATA_TAG,
    IMAGE_DATA_TAGS,
    PIXEL_DATA,
    UNDEFINED_LENGTH,
    Buffer,
    Element,
    ReadElements,
    dictionary_vr,
)
from deidpipe.identifiers import Nesting, iter_elements
from deidpipe.private_knowledge import Segment, path_segment

# Which elements to convert, from their tag and the VR the file gives (None: implicit VR).
Wanted = Callable[[int, str | None], bool]
# Where pydicom placed a value in the file: (start, end, in the file meta, route, tag).
SpanPlace = tuple[int, int, bool, tuple[tuple[int, int], ...], int]


def element_name(element: DataElement) -> str:
    name = element.keyword or (f"private tag [{element.private_creator}]"
                               if element.tag.is_private and element.private_creator
                               else "private tag" if element.tag.is_private else "unknown tag")
    return f"{name} ({element.tag.group:04X},{element.tag.element:04X})"


def element_text(element: DataElement) -> str:
    """An element's value as text; binary values (OB/UN...) decoded as Latin-1 so that text
    hidden in them is seen."""
    value = element.value
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(part) for part in value)
    return str(value)


@dataclass(frozen=True, slots=True)
class Level:
    """The sequence items an element sits in, outermost first: as reports name them, as the
    private-tag knowledge base keys them, as identifier attributes name them, and as a route
    (sequence tag, item number) from the data set."""

    path: tuple[str, ...] = ()
    segments: tuple[Segment, ...] = ()
    parents: tuple[str, ...] = ()
    route: tuple[tuple[int, int], ...] = ()


ROOT = Level()
_levels: dict[tuple[Level, int, str | None, int], Level] = {}


def _item_level(parent: Level, sequence: DataElement, number: int) -> Level:
    """The level inside item ``number`` of ``sequence`` (kept: a session repeats its levels)."""
    creator = sequence.private_creator if sequence.tag.is_private else None
    key = (parent, int(sequence.tag), creator, number)
    level = _levels.get(key)
    if level is None:
        level = Level((*parent.path, f"{element_name(sequence)} item {number}"),
                      (*parent.segments, path_segment(int(sequence.tag), creator)),
                      (*parent.parents, sequence.keyword or str(sequence.tag)),
                      (*parent.route, (int(sequence.tag), number)))
        if len(_levels) < MEMO_LIMIT:
            _levels[key] = level
    return level


@dataclass(frozen=True, slots=True)
class Info:
    """What an element's value is, whatever file holds it: its pydicom element (None for image
    data, never converted), name as reports show it, text, and VR."""

    element: DataElement | None
    name: str
    text: str
    vr: str
    keyword: str = ""
    empty: bool = True


def _info_of(element: DataElement) -> Info:
    return Info(element, element_name(element), element_text(element), element.VR,
                keyword_of(int(element.tag)), element.is_empty)


@dataclass(frozen=True, slots=True)
class Leaf:
    """One element that is not a sequence, in one file: what it is and where its value lies
    (``start:end``; -1 when not known)."""

    level: Level
    info: Info
    tag: int
    start: int
    end: int

    @property
    def element(self) -> DataElement:
        assert self.info.element is not None
        return self.info.element

    @property
    def path(self) -> str:
        """A tag path people can read: 'RequestAttributesSequence (0040,0275) item 1 >
        ScheduledProcedureStepDescription (0040,0007)'."""
        return " > ".join((*self.level.path, self.info.name))

    @property
    def segments(self) -> tuple[Segment, ...]:
        return (*self.level.segments, path_segment(self.tag, self.element.private_creator))


class FileView:
    """A file's elements for the checks. ``problem`` is '' when the whole file was read;
    ``readable`` is False when nothing of it could be read as DICOM."""

    readable = True
    problem: str = ""
    image_start: int | None = None  # where the first image data element starts, if any
    image_end: int | None = None  # just after the pixel data, when known
    # The bytes of uncompressed pixel data (start, end): numbers, not text; the raw scan
    # skips them (compressed data is scanned: a JPEG comment segment can hold text).
    native_pixels: tuple[int, int] | None = None

    @property
    def tags(self) -> list[int]:
        """The data set's top-level tags, in order."""
        raise NotImplementedError

    def leaves(self) -> list[Leaf]:
        """Every element that is not a sequence, at any depth, in tag order, file meta first,
        image data left out."""
        raise NotImplementedError

    def iter_leaves(self, wanted: Wanted | None = None) -> Iterator[Leaf]:
        """``leaves`` one by one: a damaged value raises when it is reached, after the
        elements before it. ``wanted``: only those elements (the others are not converted)."""
        yield from self.leaves()

    def spans(self) -> list[Leaf]:
        """The elements whose value bytes are known, image data included, by place in the file:
        a hit of the byte scan is attributed to the element holding it."""
        raise NotImplementedError

    def element(self, tag: int) -> DataElement:
        """A top-level element, converted (KeyError if absent)."""
        raise NotImplementedError

    def raw_key(self, tag: int) -> Hashable | None:
        """What a top-level element's stored value is, to compare with another file's without
        converting it (equal keys: equal values); None: compare the values."""
        raise NotImplementedError

    def is_empty(self, tag: int) -> bool:
        raise NotImplementedError

    def dataset(self) -> Dataset:
        """The whole file as a pydicom Dataset, its file meta set (built on first use)."""
        raise NotImplementedError

    def header(self) -> Dataset:
        """A Dataset of the top-level elements that are not sequences (for rules that read
        attributes by keyword, like the burned-in screen)."""
        raise NotImplementedError

    def get(self, tag: int) -> DataElement | None:
        return self.element(tag) if tag in self._tag_set else None

    def value(self, tag: int, default: object = None) -> object:
        """A top-level element's value, ``default`` if the element is absent."""
        element = self.get(tag)
        return default if element is None else element.value

    @cached_property
    def _tag_set(self) -> frozenset[int]:
        return frozenset(self.tags)

    def __contains__(self, tag: int) -> bool:
        return tag in self._tag_set


# ---- files the reader stands for -------------------------------------------------------------

# (tag, VR as stored, value bytes, little endian, implicit VR, encoding, private creator bytes)
# -> what pydicom makes of it. Bounded: a session's distinct values beyond it, and long values
# (a private header of each slice), are converted each time.
MEMO_VALUE_BYTES = 1024
_infos: dict[tuple[object, ...], Info] = {}


class RecordView(FileView):
    """A file read with the project's reader. The constructor raises NotPlain where pydicom
    must read the file instead (the same files ``deidpipe.dicom.datasets`` hands back); a
    damaged value raises when it is converted."""

    def __init__(self, data: Buffer, read: ReadElements, whole: bool) -> None:
        self.data, self.read, self.whole = data, read, whole
        self.implicit, self.little = read.implicit, read.little
        elements = read.elements if whole else [
            element for element in read.elements if element.tag < FIRST_IMAGE_DATA_TAG]
        self.top = {element.tag: element for element in elements}
        _check_plain(elements, top=True)
        self.encoding = self._encoding()
        self.top_creators = _creators(elements)
        self._top_infos: dict[int, Info] = {}
        self._sequences: dict[int, DataElement] = {}
        image_offset = read.structure.image_offset
        self.image_start = image_offset if image_offset < len(data) else None
        self.image_end = read.structure.image_end
        pixels = self.top.get(PIXEL_DATA)
        if pixels is not None and pixels.length != UNDEFINED_LENGTH:
            self.native_pixels = (pixels.start, pixels.end)

    def _encoding(self) -> str | list[str]:
        element = self.top.get(SPECIFIC_CHARACTER_SET)
        if element is None:
            return default_encoding
        raw = self._raw(element, self.implicit, self.little)
        try:
            return convert_encodings(convert_raw_data_element(raw).value)
        except (LookupError, ValueError, TypeError) as error:
            raise NotPlain("an unusual character set") from error

    @property
    def tags(self) -> list[int]:
        return list(self.top)

    def _raw(self, element: Element, implicit: bool, little: bool) -> RawDataElement:
        return RawDataElement(BaseTag(element.tag), element.vr or None, element.length,
                              self.data[element.start:element.end], element.start, implicit,
                              little)

    def _info(self, element: Element, creators: dict[int, Element], level: Level,
              meta: bool = False) -> Info:
        tag, vr = element.tag, element.vr
        if tag in IMAGE_DATA_TAGS:
            name = f"{keyword_of(tag)} ({tag >> 16:04X},{tag & 0xFFFF:04X})"
            return Info(None, name, "", vr or dictionary_vr(tag))
        # The file meta is always explicit VR little endian, in the default character set.
        implicit, little = (False, True) if meta else (self.implicit, self.little)
        encoding = default_encoding if meta else self.encoding
        creator = (creators.get((tag & 0xFFFF0000) | (tag & 0xFFFF) >> 8)
                   if tag >> 16 & 1 else None)
        if creator is not None and creator.tag == tag:
            creator = None
        creator_value = None if creator is None else self.data[creator.start:creator.end]
        value = self.data[element.start:element.end]
        chosen = default_encoding if tag == SPECIFIC_CHARACTER_SET else encoding
        key = (tag, vr, value, little, implicit, tuple(chosen) if isinstance(chosen, list)
               else chosen, creator_value)
        kept = len(value) <= MEMO_VALUE_BYTES
        info = _infos.get(key) if kept else None
        if info is not None:
            return info
        raw = self._raw(element, implicit, little)
        if vr in ("", "UN") and _ambiguous(tag, creator_value):
            # The VR depends on other elements (PixelRepresentation...): pydicom decides it
            # in the whole data set; not kept.
            return _info_of(locate(self.dataset(), level.route, tag)[1])
        if tag >> 16 & 1 or vr == "UN":
            # A private element's VR and name depend on its creator, an unknown VR on the
            # dictionary: pydicom's Dataset decides both, from the two elements.
            stored: dict[BaseTag, RawDataElement] = {BaseTag(tag): raw}
            if creator is not None:
                stored[BaseTag(creator.tag)] = self._raw(creator, implicit, little)
            holder = Dataset(stored)
            holder.set_original_encoding(implicit, little, encoding)
            converted = holder[tag]
        else:
            converted = convert_raw_data_element(raw, encoding=chosen)
        info = _info_of(converted)
        if kept and len(_infos) < MEMO_LIMIT:
            _infos[key] = info
        return info

    def leaves(self) -> list[Leaf]:
        return self._walked[0]

    def spans(self) -> list[Leaf]:
        return self._walked[1]

    @cached_property
    def _walked(self) -> tuple[list[Leaf], list[Leaf]]:
        spans = list(self._walk(None))
        return ([leaf for leaf in spans if leaf.info.element is not None],
                sorted(spans, key=_start_of))

    def iter_leaves(self, wanted: Wanted | None = None) -> Iterator[Leaf]:
        if wanted is None:
            yield from self.leaves()
            return
        for leaf in self._walk(wanted):
            if leaf.info.element is not None:
                yield leaf

    def _walk(self, wanted: Wanted | None) -> Iterator[Leaf]:
        """Every element that is not a sequence, image data included, file meta first;
        ``wanted``: only these are converted (the others are skipped)."""
        meta = sorted(self.read.meta, key=_tag_of_element)
        yield from self._level(meta, ROOT, _creators(meta), wanted, meta=True)
        yield from self._level(list(self.top.values()), ROOT, self.top_creators, wanted)

    def _level(self, elements: list[Element], level: Level, creators: dict[int, Element],
               wanted: Wanted | None, meta: bool = False) -> Iterator[Leaf]:
        top = level is ROOT and not meta
        for element in elements:
            if element.items is not None:
                # Its private creator stays unset, as in a Dataset pydicom reads (sequences
                # are stored converted; pydicom names a private element's creator as it
                # converts it).
                sequence = DataElement(BaseTag(element.tag), "SQ", [], already_converted=True)
                for number, item in enumerate(element.items, start=1):
                    yield from self._level(item, _item_level(level, sequence, number),
                                           _creators(item), wanted)
                continue
            if wanted is not None and not wanted(element.tag, element.vr or None):
                continue
            info = self._info(element, creators, level, meta)
            if top:
                self._top_infos[element.tag] = info
            yield Leaf(level, info, element.tag, element.start, element.end)

    def element(self, tag: int) -> DataElement:
        info = self._top_infos.get(tag)
        if info is not None and info.element is not None:
            return info.element
        element = self.top[tag]
        if element.items is not None:
            if tag not in self._sequences:  # built alone: the whole Dataset is not needed
                self._sequences[tag] = read_sequence(self.data, element, self.implicit,
                                                     self.little, self.encoding,
                                                     _conversion_memo)
            return self._sequences[tag]
        if tag in IMAGE_DATA_TAGS:
            return self.dataset()[tag]
        info = self._info(element, self.top_creators, ROOT)
        self._top_infos[tag] = info
        assert info.element is not None
        return info.element

    def raw_key(self, tag: int) -> Hashable | None:
        element = self.top[tag]
        value = self.data[element.start:element.end]
        if element.items is None:
            return value
        # A sequence's bytes mean the same values only in the same encoding.
        return ("SQ", self.implicit, self.little, str(self.encoding), value)

    def is_empty(self, tag: int) -> bool:
        element = self.top[tag]
        if element.items is not None:
            return not element.items
        if tag in IMAGE_DATA_TAGS:
            return self.element(tag).is_empty
        self.element(tag)
        return self._top_infos[tag].empty

    @cached_property
    def _dataset(self) -> Dataset:
        try:
            read = read_file(self.data, _conversion_memo, self.whole)
        except NotPlain:
            read = None
        if read is None:  # the walk above stands for the file: this does not happen
            return dcmread(io.BytesIO(self.data), stop_before_pixels=not self.whole, force=True)
        read.dataset.file_meta = read.file_meta
        return read.dataset

    def dataset(self) -> Dataset:
        return self._dataset

    @cached_property
    def _header(self) -> Dataset:
        if "_walked" not in self.__dict__:  # else the walk has converted them all
            for tag, element in self.top.items():
                if element.items is None and tag not in IMAGE_DATA_TAGS:
                    self.element(tag)
        return Dataset({BaseTag(tag): info.element for tag, info in self._top_infos.items()
                        if info.element is not None})

    def header(self) -> Dataset:
        return self._header


# Whole Datasets built by RecordView.dataset share converted values (deidpipe.dicom.datasets).
_conversion_memo: dict = {}  # type: ignore[type-arg]


def _check_plain(elements: list[Element], top: bool) -> None:
    """Raise NotPlain where a Dataset built from the records could differ from pydicom's own
    (deidpipe.dicom.datasets): elements out of order, an item with a character set of its own,
    a sequence pydicom would not read as one, an ambiguous VR inside a sequence."""
    if any(later.tag <= earlier.tag for earlier, later in zip(elements, elements[1:],
                                                              strict=False)):
        raise NotPlain("elements out of order or repeated")
    for element in elements:
        if element.items is None:
            if (not top and element.vr in ("", "UN") and not element.tag >> 16 & 1
                    and " or " in dictionary_vr(element.tag)):
                raise NotPlain("an ambiguous VR inside a sequence")
            continue
        if element.vr not in ("SQ", "") or (element.vr == "" and element.tag >> 16 & 1 == 0
                                            and dictionary_vr(element.tag) != "SQ"):
            raise NotPlain("a sequence pydicom would read otherwise")
        for item in element.items:
            if any(child.tag == SPECIFIC_CHARACTER_SET for child in item):
                raise NotPlain("an item with a character set of its own")
            _check_plain(item, top=False)


def _creators(elements: Iterable[Element]) -> dict[int, Element]:
    """The elements of a level that pydicom takes for private creators (gggg,00xx), by tag."""
    return {element.tag: element for element in elements
            if element.tag >> 16 & 1 and element.tag & 0xFFFF <= 0xFF}


def _tag_of_element(element: Element) -> int:
    return element.tag


def _start_of(leaf: Leaf) -> int:
    return leaf.start


def _ambiguous(tag: int, creator_value: bytes | None) -> bool:
    """Whether the VR pydicom gives an element of unknown VR depends on other elements."""
    if not tag >> 16 & 1:
        return " or " in dictionary_vr(tag)
    if creator_value is None:
        return False
    try:
        return " or " in private_dictionary_VR(tag, creator_value.rstrip(b"\0 ").decode(
            "latin-1"))
    except KeyError:
        return False


# ---- files pydicom reads -----------------------------------------------------------------------

class DatasetView(FileView):
    """A file read by pydicom (damaged or unusual): the same view from its Dataset.
    ``spans``: the values whose bytes pydicom placed in the file."""

    def __init__(self, dataset: Dataset, problem: str = "",
                 raw_values: dict[int, bytes | None] | None = None,
                 spans: list[SpanPlace] | None = None, image_start: int | None = None,
                 image_end: int | None = None,
                 native_pixels: tuple[int, int] | None = None) -> None:
        self._full = dataset
        self.problem, self.image_start, self.image_end = problem, image_start, image_end
        self.native_pixels = native_pixels
        # Top-level value bytes as stored, taken before pydicom converted them.
        self._raw_values = raw_values or {}
        self._span_places = spans or []

    @property
    def tags(self) -> list[int]:
        return sorted(int(tag) for tag in self._full.keys())

    def leaves(self) -> list[Leaf]:
        return self._leaves

    @cached_property
    def _leaves(self) -> list[Leaf]:
        return list(self.iter_leaves())

    def iter_leaves(self, wanted: Wanted | None = None) -> Iterator[Leaf]:
        def wanted_raw(raw: RawDataElement) -> bool:
            return wanted is None or wanted(int(raw.tag), raw.VR)

        for root in (self._full.file_meta, self._full):
            for nesting, element in iter_elements(root, wanted=wanted_raw):
                if int(element.tag) not in IMAGE_DATA_TAGS:
                    yield Leaf(_level_of(nesting), _info_of(element), int(element.tag), -1, -1)

    def spans(self) -> list[Leaf]:
        return self._spans

    @cached_property
    def _spans(self) -> list[Leaf]:
        spans = []
        for start, end, in_meta, route, tag in self._span_places:
            nesting, element = locate(self._full.file_meta if in_meta else self._full, route,
                                      tag)
            spans.append(Leaf(_level_of(nesting), _info_of(element), tag, start, end))
        return sorted(spans, key=_start_of)

    def element(self, tag: int) -> DataElement:
        return self._full[tag]

    def raw_key(self, tag: int) -> Hashable | None:
        return self._raw_values.get(tag)

    def is_empty(self, tag: int) -> bool:
        return self._full[tag].is_empty

    def dataset(self) -> Dataset:
        return self._full

    def header(self) -> Dataset:
        return self._full


def locate(root: Dataset, route: tuple[tuple[int, int], ...], tag: int
           ) -> tuple[Nesting, DataElement]:
    nesting: Nesting = ()
    dataset = root
    for sequence_tag, number in route:
        sequence = dataset[sequence_tag]
        nesting = (*nesting, (sequence, number))
        dataset = sequence.value[number - 1]
    return nesting, dataset[tag]


def _level_of(nesting: Nesting) -> Level:
    level = ROOT
    for sequence, number in nesting:
        level = _item_level(level, sequence, number)
    return level


class Unreadable(FileView):
    """A file nothing of which can be read as DICOM."""

    readable = False

    def __init__(self, problem: str, image_end: int | None = None) -> None:
        self.problem, self.image_end = problem, image_end

    @property
    def tags(self) -> list[int]:
        return []

    def leaves(self) -> list[Leaf]:
        return []

    def spans(self) -> list[Leaf]:
        return []
