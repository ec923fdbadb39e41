"""How a job measures its session (deidpipe.parallel.count_files) to choose its cores."""

import os

from deidpipe.parallel import count_files


def test_files_are_counted_below_every_folder_links_not_followed(tmp_path):
    for folder, files in (("a", 3), ("a/b", 2), ("c", 1)):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        for index in range(files):
            (tmp_path / folder / f"IM{index}.dcm").write_bytes(b"x")
    os.symlink(tmp_path / "a", tmp_path / "link-to-a")
    os.symlink(tmp_path / "c" / "IM0.dcm", tmp_path / "link-to-file")
    assert count_files(tmp_path, 100) == 6


def test_counting_stops_at_the_limit(tmp_path):
    for index in range(30):
        (tmp_path / f"IM{index}.dcm").write_bytes(b"x")
    assert count_files(tmp_path, 10) == 10
    assert count_files(tmp_path, 30) == 30


def test_a_folder_that_cannot_be_read_counts_nothing(tmp_path):
    assert count_files(tmp_path / "missing", 10) == 0
    (tmp_path / "afile").write_bytes(b"x")
    assert count_files(tmp_path / "afile", 10) == 0
