"""pydicom Datasets built from the reader's elements, without pydicom parsing the file.

The reader (deidpipe.dicom.reader) has already walked every element; here each becomes a
pydicom RawDataElement in a Dataset, as ``dcmread`` would make it, and pydicom converts a value
when a check asks for it. Values of public elements that the files of a session share (most of
a series' header) are converted once per worker process and reused (``ConversionMemo``).

Where the reader and pydicom could disagree (a data set that is not plain: damaged, deflated,
padded, a sequence in an element of unknown VR, an ambiguous VR inside a sequence, an item
with a character set of its own), ``NotPlain`` is raised and the caller reads the file with
pydicom itself, so that what is reported never depends on which reader read it.
"""

from dataclasses import dataclass
from functools import lru_cache

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from deidpipe.dicom.reader import (
    FIRST_IMAGE_DATA_TAG,
    UNDEFINED_LENGTH,
    Buffer,
    Element,
    ReadElements,
    Unstageable,
    dictionary_vr,
    read_elements,
)

SPECIFIC_CHARACTER_SET = 0x00080005
MEMO_LIMIT = 50_000  # converted values kept per process (a series shares most of its header)


@lru_cache(maxsize=8192)
def keyword_of(tag: int) -> str:
    """``DataElement.keyword`` of a tag ('' for private and unknown tags, and repeaters such
    as overlays), remembered: pydicom looks it up in its dictionary every time."""
    return DataElement(BaseTag(tag), "UN", None).keyword


class NotPlain(Exception):
    """The file is not one the reader's datasets stand for exactly: read it with pydicom."""


# (tag, VR as stored, value bytes, little endian, encoding) -> the element pydicom makes of it
ConversionMemo = dict[tuple[int, str, bytes, bool, tuple[str, ...]], DataElement]


@dataclass
class ReadFile:
    """A file read by the reader: its pydicom datasets and where each element lies."""

    read: ReadElements
    file_meta: FileMetaDataset
    dataset: Dataset


def read_file(data: Buffer, memo: ConversionMemo | None = None, whole: bool = True
              ) -> ReadFile | None:
    """The file's datasets (None: not DICOM); raises NotPlain where pydicom must read it.
    ``whole``: every element; else the elements before the image data, as pydicom's
    ``stop_before_pixels``. ``memo``: convert what it can now, else pydicom converts a value
    when it is looked at."""
    try:
        read = read_elements(data, whole)
    except Unstageable as error:
        raise NotPlain(str(error)) from None
    if read is None:
        return None
    file_meta = FileMetaDataset(_raw_level(data, read.meta, False, True))
    if not whole:
        read.elements = [element for element in read.elements
                         if element.tag < FIRST_IMAGE_DATA_TAG]
    builder = _Builder(data, read.implicit, read.little, memo)
    dataset = builder.level(read.elements, default_encoding, top=True)
    return ReadFile(read, file_meta, dataset)


def read_sequence(data: Buffer, element: Element, implicit: bool, little: bool,
                  encoding: str | list[str], memo: ConversionMemo | None = None
                  ) -> DataElement:
    """One sequence element of a file read by ``read_elements``, as ``read_file`` builds it
    (``encoding``: its data set's character set)."""
    return _Builder(data, implicit, little, memo).sequence(element, encoding)


def _raw_level(data: Buffer, elements: list[Element], implicit: bool, little: bool
               ) -> dict[BaseTag, RawDataElement]:
    return {BaseTag(element.tag): _raw(data, element, implicit, little) for element in elements}


def _raw(data: Buffer, element: Element, implicit: bool, little: bool) -> RawDataElement:
    return RawDataElement(BaseTag(element.tag), element.vr or None, element.length,
                          data[element.start:element.end], element.start, implicit, little)


class _Builder:
    def __init__(self, data: Buffer, implicit: bool, little: bool,
                 memo: ConversionMemo | None) -> None:
        self.data, self.implicit, self.little, self.memo = data, implicit, little, memo

    def level(self, elements: list[Element], parent_encoding: str | list[str], top: bool
              ) -> Dataset:
        tags = [element.tag for element in elements]
        if any(later <= earlier for earlier, later in zip(tags, tags[1:], strict=False)):
            raise NotPlain("elements out of order or repeated")
        encoding = parent_encoding
        stored: dict[BaseTag, RawDataElement | DataElement] = {}
        for element in elements:
            if element.tag == SPECIFIC_CHARACTER_SET:
                if not top:
                    raise NotPlain("an item with a character set of its own")
                raw = _raw(self.data, element, self.implicit, self.little)
                try:
                    encoding = convert_encodings(convert_raw_data_element(raw).value)
                except (LookupError, ValueError, TypeError) as error:
                    raise NotPlain("an unusual character set") from error
        for element in elements:
            tag = BaseTag(element.tag)
            if element.items is not None:
                stored[tag] = self.sequence(element, encoding)
                continue
            raw = _raw(self.data, element, self.implicit, self.little)
            converted = self.converted(raw, element, encoding, top)
            stored[tag] = raw if converted is None else converted
        dataset = Dataset(stored, parent_encoding=parent_encoding)
        dataset.set_original_encoding(self.implicit, self.little, encoding)
        return dataset

    def sequence(self, element: Element, encoding: str | list[str]) -> DataElement:
        if element.vr not in ("SQ", "") or (element.vr == "" and element.tag >> 16 & 1 == 0
                                            and dictionary_vr(element.tag) != "SQ"):
            raise NotPlain("a sequence pydicom would read otherwise")
        items = [self.level(item, encoding, top=False) for item in element.items or []]
        return DataElement(BaseTag(element.tag), "SQ", Sequence(items), element.start,
                           element.length == UNDEFINED_LENGTH, already_converted=True)

    def converted(self, raw: RawDataElement, element: Element, encoding: str | list[str],
                  top: bool) -> DataElement | None:
        """The element converted from the memo, or None to leave it to pydicom (a private
        element's VR and name depend on its creator; an ambiguous VR on the data set)."""
        tag = element.tag
        vr = element.vr
        if vr in ("", "UN"):
            known = dictionary_vr(tag) if not tag >> 16 & 1 else ""
            if not known or " or " in known:
                if not top and " or " in known:
                    raise NotPlain("an ambiguous VR inside a sequence")
                return None
        if tag >> 16 & 1 or self.memo is None or vr == "UN":
            return None
        chosen = encoding if tag != SPECIFIC_CHARACTER_SET else default_encoding
        key = (tag, vr, raw.value, self.little,
               tuple(chosen) if isinstance(chosen, list) else (chosen,))
        known = self.memo.get(key)
        if known is None:
            # One element object for every file holding this value: checks only read public
            # elements (pydicom sets nothing on them but for private creators).
            known = convert_raw_data_element(raw, encoding=chosen)
            if len(self.memo) < MEMO_LIMIT:
                self.memo[key] = known
        return known
