"""The project's byte-level reader (deidpipe.dicom) on its own: every element at any depth, its
value bytes where the file holds them, and pydicom Datasets equal to what pydicom reads."""

import io
import warnings

import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from deidpipe.dicom.datasets import NotPlain, read_file
from deidpipe.dicom.reader import Element, read_elements


def saved(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def nested_mr() -> pydicom.Dataset:
    """MR_small with a private element, a two-deep sequence and an element after the pixels."""
    dataset = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    block = dataset.private_block(0x0029, "ACME 1.0", create=True)
    block.add_new(0x10, "LO", "private words")
    inner = Dataset()
    inner.CodeValue = "T-A0100"
    outer = Dataset()
    outer.ConceptNameCodeSequence = Sequence([inner])
    outer.TextValue = "second level"
    dataset.ContentSequence = Sequence([outer, Dataset()])
    dataset.add_new(0xFFFAFFFA, "SQ", Sequence([]))  # digital signatures: after the pixels
    dataset.add_new(0x7FE10010, "LO", "after the pixel data")
    return dataset


def values_by_path(elements: list[Element], data: bytes, prefix: tuple = ()) -> dict:
    found = {}
    for element in elements:
        if element.items is None:
            found[(*prefix, element.tag)] = data[element.start:element.end]
        for number, item in enumerate(element.items or [], start=1):
            found.update(values_by_path(item, data, (*prefix, element.tag, number)))
    return found


def pydicom_values(dataset: pydicom.Dataset, prefix: tuple = ()) -> dict:
    found = {}
    for element in dataset:
        if element.VR == "SQ":
            for number, item in enumerate(element.value, start=1):
                found.update(pydicom_values(item, (*prefix, int(element.tag), number)))
        else:
            found[(*prefix, int(element.tag))] = element.value
    return found


def test_every_element_at_any_depth_with_its_value_bytes():
    data = saved(nested_mr())
    read = read_elements(data)
    assert read is not None
    values = values_by_path(read.elements, data)
    assert values[(0x7FE10010,)] == b"after the pixel data"
    assert values[(0x00291010,)] == b"private words "
    assert values[(0x0040A730, 1, 0x0040A043, 1, 0x00080100)] == b"T-A0100 "
    assert values[(0x0040A730, 1, 0x0040A160)] == b"second level"
    assert (0x0040A730, 2) not in values  # an empty item holds nothing
    meta = values_by_path(read.meta, data)
    assert meta[(0x00020010,)].rstrip(b"\0") == b"1.2.840.10008.1.2.1"
    # Each value lies where pydicom reads it: the raw bytes of its own parse.
    raw = pydicom.dcmread(io.BytesIO(data))
    for tag in (0x00100010, 0x00291010, 0x7FE00010):
        assert values[(tag,)] == raw.get_item(tag).value
    assert read.structure.image_end is not None
    assert read.structure.image_offset < read.structure.image_end < len(data)


def test_up_to_the_image_data_only_when_asked():
    data = saved(nested_mr())
    read = read_file(data, whole=False)
    assert read is not None
    assert 0x7FE10010 not in read.dataset and 0x7FE00010 not in read.dataset
    assert 0x00100010 in read.dataset


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_datasets_equal_what_pydicom_reads_for_its_own_test_files():
    """Every pydicom test file that both read: the same elements, VRs, values and private
    creators, nested ones too. Most are read by the project's reader, not handed back."""
    compared = handed_back = 0
    memo: dict = {}
    for path in get_testdata_files("*.dcm"):
        data = open(path, "rb").read()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expected = pydicom.dcmread(io.BytesIO(data))
                expected_elements = describe(expected.file_meta) + describe(expected)
        except Exception:  # noqa: BLE001 (pydicom's own test files include broken ones)
            continue
        try:
            read = read_file(data, memo)
        except NotPlain:
            handed_back += 1
            continue
        assert read is not None, path
        assert describe(read.file_meta) + describe(read.dataset) == expected_elements, path
        compared += 1
    assert compared >= 50 and handed_back <= compared // 4, (compared, handed_back)


def describe(dataset: pydicom.Dataset) -> list:
    return [(int(element.tag), element.VR, element.private_creator,
             len(element.value) if element.VR == "SQ" else repr(element.value))
            for element in dataset.iterall()]


def test_a_file_cut_short_is_handed_back_to_pydicom():
    data = saved(nested_mr())
    header_end = data.index(b"private words")
    with pytest.raises(NotPlain):
        read_file(data[:header_end + 5])


def test_a_deflated_data_set_is_handed_back_to_pydicom():
    with pytest.raises(NotPlain):
        read_file(open(get_testdata_file("image_dfl.dcm"), "rb").read())


def test_not_dicom_is_none():
    assert read_file(b"%PDF-1.4 not an image at all, long enough to look at") is None


def test_the_file_meta_and_data_set_read_by_pydicom_and_by_the_reader_agree():
    dataset = nested_mr()
    data = saved(dataset)
    read = read_file(data)
    assert read is not None
    assert pydicom_values(read.dataset) == pydicom_values(pydicom.dcmread(io.BytesIO(data)))
