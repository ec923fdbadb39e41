"""The review page of a session (``{session}.review.html`` beside the staged session): the
images a person must look at, in order, escaped, self-contained, owner-only; and what a browser
(headless Chromium) shows of it."""

import base64
import io
import os
import stat
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from test_report_html import CHROMIUM, CHROMIUM_FLAGS, Node, parse, render_in_chromium

from deidpipe.paths import MANIFEST_SUFFIX, review_page_beside, staged_dir_beside
from deidpipe.review import (
    MAX_CARDS,
    ReviewImage,
    ReviewText,
    render_review_page,
    write_review_page,
)

WHEN = datetime(2026, 3, 4, 5, 6, tzinfo=UTC)
TITLE = "demo/deid-demo/sub-001/ses-01"
SECTION_IDS = ["matched", "text-found", "not-decoded", "at-risk", "series-sample"]
SECTION_HEADINGS = ["Text that matches an identifier", "Other text found",
                    "Could not be decoded", "At risk of burned-in text", "One image per series"]
SCRIPT_TEXT = "<script>document.title='pwned'</script> & <b>bold</b>"
# A colour no thumbnail's text or boxes use: the browser test finds it in the screenshot.
MARKER = (255, 0, 255)


def thumbnail(lines: list[str], size: tuple[int, int] = (240, 160),
              background: tuple[int, int, int] = (20, 20, 20)) -> tuple[bytes, list]:
    """A small image with text drawn on it and a box around each line, as OCR would give;
    returns the PNG and each line's box (4 corners)."""
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, size[0] - 1, size[1] - 1], outline=MARKER, width=6)
    boxes = []
    for number, line in enumerate(lines):
        left, top = 14, 14 + 26 * number
        draw.text((left, top), line, fill=(235, 235, 235))
        right, bottom = draw.textbbox((left, top), line)[2:]
        draw.rectangle([left - 3, top - 3, right + 3, bottom + 3], outline=(255, 60, 60))
        boxes.append(((left - 3, top - 3), (right + 3, top - 3), (right + 3, bottom + 3),
                      (left - 3, bottom + 3)))
    stream = io.BytesIO()
    image.save(stream, format="PNG")
    return stream.getvalue(), boxes


def review_image(file: str, reasons: tuple[str, ...], lines: tuple[tuple[str, str], ...] = (),
                 series: str = "1 - T1w", frame: int = 0, png: bytes | None = None,
                 problem: str = "") -> ReviewImage:
    """An image with OCR lines given as (text, matched attribute or '')."""
    drawn, boxes = thumbnail([text for text, _ in lines])
    texts = tuple(ReviewText(text=text, matched=matched, box=box)
                  for (text, matched), box in zip(lines, boxes, strict=True))
    return ReviewImage(file=file, frame=frame, series=series, reasons=reasons,
                       png=drawn if png is None else png, texts=texts, problem=problem)


COUNTS = {"images": 120, "frames": 340, "read": 12, "with_text": 2, "matched": 1,
          "not_decoded": 1}
# Given out of order: the page puts them in its sections' order, keeping this order within.
IMAGES = [
    review_image("2-T2w/1.2.20.MR.dcm", ("series sample",), series="2 - T2w"),
    review_image("3-SC/1.2.30.SC.dcm", ("text found", "matches an identifier",
                                        "at risk of burned-in text"),
                 (("Patient: DOE^JANE", "PatientName"), ("Study 2026", "")), series="3 - SC",
                 frame=0),
    review_image("4-US/1.2.40.US.dcm", ("at risk of burned-in text",), series="4 - US"),
    review_image("5-XA/1.2.50.XA.dcm", ("could not be decoded",), png=b"", series="5 - XA",
                 problem="JPEG 2000 data ends early (truncated file)"),
    review_image("6-OT/1.2.60.OT.dcm", ("text found",), ((SCRIPT_TEXT, ""), ("L R", "")),
                 series="6 - OT", frame=7),
    review_image("1-T1w/1.2.10.MR.dcm", ("series sample",), series="1 - T1w"),
    review_image("3-SC/1.2.31.SC.dcm", ("matches an identifier",),
                 (("MRN 12345678", "PatientID"),), series="3 - SC", frame=2),
]
EXPECTED_ORDER = [  # (section, file) of each card, top to bottom
    ("matched", "3-SC/1.2.30.SC.dcm"), ("matched", "3-SC/1.2.31.SC.dcm"),
    ("text-found", "6-OT/1.2.60.OT.dcm"), ("not-decoded", "5-XA/1.2.50.XA.dcm"),
    ("at-risk", "4-US/1.2.40.US.dcm"), ("series-sample", "2-T2w/1.2.20.MR.dcm"),
    ("series-sample", "1-T1w/1.2.10.MR.dcm")]


def cards(dom: Node) -> list[tuple[str, Node]]:
    return [(section.attrs["id"], card) for section in dom.iter("section")
            for card in section.iter("article")]


def details(card: Node) -> dict[str, str]:
    listing = next(node for node in card.iter("dl") if node.attrs.get("class") == "details")
    terms = [node.text() for node in listing.iter("dt")]
    values = [node.text() for node in listing.iter("dd")]
    return dict(zip(terms, values, strict=True))


def paragraphs(node: Node) -> list[str]:
    return [paragraph.text() for paragraph in node.iter("p")]


def csp_directives(page: str) -> dict[str, list[str]]:
    dom = parse(page)
    metas = [meta for meta in dom.iter("meta")
             if meta.attrs.get("http-equiv", "").lower() == "content-security-policy"]
    assert len(metas) == 1
    directives = {}
    for directive in metas[0].attrs["content"].split(";"):
        name, *values = directive.split()
        directives[name] = values
    return directives


@pytest.fixture
def page() -> str:
    return render_review_page(TITLE, IMAGES, COUNTS, WHEN)


# ---- the page as rendered --------------------------------------------------------------------

def test_sections_in_order_and_each_card_in_its_most_urgent_section(page):
    dom = parse(page)
    sections = list(dom.iter("section"))
    assert [section.attrs["id"] for section in sections] == SECTION_IDS
    assert [next(section.iter("h2")).text() for section in sections] == SECTION_HEADINGS
    for section in sections:
        assert next(section.iter("p")).attrs.get("class") == "explain"
    assert "block the upload" in next(sections[0].iter("p")).text()
    assert "the header never held" in next(sections[1].iter("p")).text()
    assert [(section, details(card)["File"]) for section, card in cards(dom)] == EXPECTED_ORDER
    # The contents list counts each section's images.
    assert [item.text() for item in next(dom.iter("nav")).iter("li")] == [
        "Text that matches an identifier: 2 images", "Other text found: 1 image",
        "Could not be decoded: 1 image", "At risk of burned-in text: 1 image",
        "One image per series: 2 images"]


def test_card_shows_file_frame_series_reasons_and_text_lines(page):
    by_file = {details(card)["File"]: card for _section, card in cards(parse(page))}
    leak = by_file["3-SC/1.2.30.SC.dcm"]
    assert details(leak) == {
        "File": "3-SC/1.2.30.SC.dcm", "Frame": "1 (counting from 1)", "Series": "3 - SC",
        "Why shown": "text found; matches an identifier; at risk of burned-in text"}
    lines = list(next(leak.iter("ol")).iter("li"))
    assert [line.attrs.get("class", "") for line in lines] == ["matched", ""]
    assert lines[0].text().startswith("matches PatientName Patient: DOE^JANE (at x 11, y 11)")
    assert lines[1].text().startswith("Study 2026")
    assert "matches" not in lines[1].text()
    assert details(by_file["6-OT/1.2.60.OT.dcm"])["Frame"] == "8 (counting from 1)"
    sample = by_file["1-T1w/1.2.10.MR.dcm"]
    assert not list(sample.iter("ol"))
    assert "No text recognised in this frame." in paragraphs(sample)


def test_ocr_boxes_with_fractional_corners_give_whole_pixels():
    png, _boxes = thumbnail([])
    line = ReviewText("SCALE 10 cm", "", ((4.4, 6.6), (60.2, 6.1), (60.2, 20.0), (4.6, 20.0)))
    image = ReviewImage("1-OT/1.dcm", 0, "1 - OT", ("text found",), png, (line,))
    card = next(parse(render_review_page(TITLE, [image], COUNTS, WHEN)).iter("article"))
    assert next(card.iter("li")).text() == "SCALE 10 cm (at x 4, y 6)"


def test_thumbnails_are_the_pngs_given_as_data_uris_with_alt_text(page):
    by_file = {details(card)["File"]: card for _section, card in cards(parse(page))}
    given = {image.file: image for image in IMAGES}
    for file, card in by_file.items():
        images = list(card.iter("img"))
        if not given[file].png:
            continue
        assert len(images) == 1
        source = images[0].attrs["src"]
        prefix = "data:image/png;base64,"
        assert source.startswith(prefix)
        assert base64.b64decode(source.removeprefix(prefix), validate=True) == given[file].png
        frame = given[file].frame + 1
        assert images[0].attrs["alt"] == f"{file}, frame {frame} (counting from 1)"
        assert (images[0].attrs["width"], images[0].attrs["height"]) == ("240", "160")
        assert Image.open(io.BytesIO(base64.b64decode(source.removeprefix(prefix)))).size == (
            240, 160)


def test_an_image_that_could_not_be_decoded_has_no_img_and_names_its_problem(page):
    section = parse(page).by_id("not-decoded")
    card = next(section.iter("article"))
    assert not list(card.iter("img"))
    assert "could not be decoded" in card.text()
    assert details(card)["Problem"] == "JPEG 2000 data ends early (truncated file)"
    assert "No text: the frame could not be decoded." in paragraphs(card)


def test_ocr_text_is_escaped_and_there_is_no_script(page):
    assert "<script" not in page.lower()
    assert "<b>bold" not in page
    assert ("&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt; &amp; "
            "&lt;b&gt;bold&lt;/b&gt;") in page
    dom = parse(page)
    assert not list(dom.iter("script")) and not list(dom.iter("b"))
    texts = [node.text() for node in dom.by_id("text-found").iter("span")
             if node.attrs.get("class") == "text"]
    assert texts == [SCRIPT_TEXT, "L R"]
    # Nothing is loaded from anywhere: the only src are the thumbnails' data URIs.
    for external in ("http://", "https://", "<link", "@import", "url(", "<iframe", "<object"):
        assert external not in page
    assert all(image.attrs["src"].startswith("data:image/png;base64,")
               for image in dom.iter("img"))


def test_title_in_page_is_escaped():
    page = render_review_page('sub-"x"/<i>ses</i>', [], dict.fromkeys(COUNTS, 0), WHEN)
    assert "<i>" not in page
    dom = parse(page)
    assert next(dom.iter("h1")).text() == 'Images to review: sub-"x"/<i>ses</i>'
    assert not list(dom.iter("i"))


def test_csp_allows_inline_style_and_data_images_and_nothing_else(page):
    directives = csp_directives(page)
    assert directives["default-src"] == ["'none'"]
    assert directives["img-src"] == ["data:"]
    assert directives["style-src"] == ["'unsafe-inline'"]
    # No directive loosens scripts (default-src 'none' forbids them) or anything else.
    assert not {"script-src", "script-src-elem", "script-src-attr", "connect-src",
                "frame-src", "object-src"} & set(directives)
    assert set(directives) <= {"default-src", "img-src", "style-src", "base-uri",
                               "form-action"}
    assert all(values == ["'none'"] for name, values in directives.items()
               if name in ("base-uri", "form-action"))
    assert " on" not in "".join(f" {name}" for tag in parse(page).iter()
                                for name in tag.attrs)  # no event handler attributes


def test_header_says_when_what_and_that_it_is_private(page):
    header = parse(page).by_id("session")
    assert next(header.iter("h1")).text() == f"Images to review: {TITLE}"
    assert [node.text() for node in header.iter("dd")] == [TITLE, "2026-03-04 05:06 UTC"]
    text = header.text()
    assert "as they will be uploaded" in text and "Private." in text
    assert "Do not copy, upload or share it." in text
    assert paragraphs(header)[2:5] == [
        "OCR read 12 of 340 frames in 120 images; 2 frames hold text, 1 matches an identifier.",
        "The other 328 frames were not read by OCR: nothing on this page says they are free of "
        "text.",
        "1 frame could not be decoded: a person must open it (see 'Could not be decoded')."]


@pytest.mark.parametrize(("counts", "sentence"), [
    ({"images": 1, "frames": 1, "read": 1, "with_text": 1, "matched": 0, "not_decoded": 0},
     "OCR read 1 of 1 frame in 1 image; 1 frame holds text, none matches an identifier."),
    ({"images": 3, "frames": 9, "read": 9, "with_text": 4, "matched": 2, "not_decoded": 0},
     "OCR read 9 of 9 frames in 3 images; 4 frames hold text, 2 match an identifier."),
    ({"images": 3, "frames": 9, "read": 9, "with_text": 0, "matched": 0, "not_decoded": 0},
     "OCR read 9 of 9 frames in 3 images; no frame holds text."),
])
def test_counts_in_words(counts, sentence):
    header = parse(render_review_page(TITLE, [], counts, WHEN)).by_id("session")
    counted = [node.text() for node in header.iter("p") if node.attrs.get("class") == "counts"]
    assert counted == [sentence]  # every frame was read and decoded: nothing more to say


def test_counts_must_all_be_given():
    with pytest.raises(ValueError, match="not_decoded"):
        render_review_page(TITLE, [], {key: 0 for key in COUNTS if key != "not_decoded"}, WHEN)


def test_a_thumbnail_that_is_not_a_png_is_refused():
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8)).save(jpeg, format="JPEG")
    image = review_image("1/1.dcm", ("series sample",), png=jpeg.getvalue())
    with pytest.raises(ValueError, match="PNG"):
        render_review_page(TITLE, [image], COUNTS, WHEN)


def test_empty_page_says_so_in_every_section():
    page = render_review_page(TITLE, [], dict.fromkeys(COUNTS, 0), WHEN)
    dom = parse(page)
    assert [section.attrs["id"] for section in dom.iter("section")] == SECTION_IDS
    assert not list(dom.iter("article")) and not list(dom.iter("img"))
    expected = {"matched": "No text that OCR read matches an identifier.",
                "text-found": "OCR found no other text.",
                "not-decoded": "No image failed to decode.",
                "at-risk": "No other image is of a class at risk of burned-in text.",
                "series-sample": "No series sample to show."}
    for section_id, sentence in expected.items():
        assert paragraphs(dom.by_id(section_id))[1:] == [sentence]
    header = dom.by_id("session")
    assert "OCR read 0 of 0 frames in 0 images; no frame holds text." in paragraphs(header)
    assert "not shown" not in page


def test_page_is_capped_at_500_cards_most_urgent_first():
    png, _boxes = thumbnail(["x"], size=(16, 16))
    text_found = [ReviewImage(file=f"1-OT/{number}.dcm", frame=0, series="1 - OT",
                              reasons=("text found",), png=png,
                              texts=(ReviewText(f"line {number}", "", ()),))
                  for number in range(MAX_CARDS - 3)]
    matched = [ReviewImage(file=f"2-SC/{number}.dcm", frame=0, series="2 - SC",
                           reasons=("matches an identifier",), png=png,
                           texts=(ReviewText("DOE", "PatientName", ()),))
               for number in range(2)]
    samples = [ReviewImage(file=f"{number}-MR/1.dcm", frame=0, series=f"{number} - MR",
                           reasons=("series sample",), png=png, texts=())
               for number in range(12)]
    page = render_review_page(TITLE, [*samples, *text_found, *matched], COUNTS, WHEN)
    dom = parse(page)
    shown = cards(dom)
    assert len(shown) == MAX_CARDS == 500
    assert [section for section, _card in shown].count("matched") == 2
    assert [section for section, _card in shown].count("text-found") == MAX_CARDS - 3
    assert [details(card)["File"] for section, card in shown
            if section == "series-sample"] == ["0-MR/1.dcm"]
    assert ("11 more images were not shown: this page shows at most 500, the most urgent "
            "first. The verification report lists them all.") in paragraphs(dom.by_id("session"))
    assert paragraphs(dom.by_id("series-sample"))[-1] == (
        "11 more images in this section not shown: the page shows at most 500. The "
        "verification report lists them all.")
    assert not any("not shown" in text for text in paragraphs(dom.by_id("text-found")))
    # The contents list still counts every image.
    assert "One image per series: 12 images" in [
        item.text() for item in next(dom.iter("nav")).iter("li")]


# ---- the file ----------------------------------------------------------------------------------

def test_review_page_is_beside_the_staged_session():
    manifest = Path("/staging/demo/deid-demo/sub-001") / f"ses-01{MANIFEST_SUFFIX}"
    path = review_page_beside(staged_dir_beside(manifest))
    assert path == Path("/staging/demo/deid-demo/sub-001/ses-01.review.html")
    assert path.parent == staged_dir_beside(manifest).parent
    assert review_page_beside("/staging/demo/deid-demo/sub-001/ses-01") == path


def test_written_owner_only_and_atomically(tmp_path):
    manifest = tmp_path / "staging" / "demo" / "deid-demo" / "sub-001" / "ses-01.manifest.json"
    path = review_page_beside(staged_dir_beside(manifest))
    old_umask = os.umask(0o022)
    try:
        write_review_page(path, TITLE, IMAGES, COUNTS, WHEN)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert path.read_text(encoding="utf-8") == render_review_page(TITLE, IMAGES, COUNTS, WHEN)
    assert [entry.name for entry in path.parent.iterdir()] == ["ses-01.review.html"]
    # Rewritten in place (no temporary left), still owner-only; the time defaults to now.
    write_review_page(path, TITLE, [], dict.fromkeys(COUNTS, 0))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [entry.name for entry in path.parent.iterdir()] == ["ses-01.review.html"]
    now = datetime.now().astimezone()
    assert f"{now:%Y-%m-%d}" in parse(path.read_text(encoding="utf-8")).by_id("session").text()


# ---- the page as a browser shows it ----------------------------------------------------------

def screenshot_in_chromium(page: Path, tmp_path: Path, output: Path,
                           size: tuple[int, int] = (1280, 3600)) -> Image.Image:
    """A screenshot of the page in headless Chromium (the flags of render_in_chromium)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium or deselect with "
                    "-m 'not browser'")
    profile_dir = tmp_path / "chromium-screenshot-profile"
    profile_dir.mkdir()
    result = subprocess.run(
        [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}",
         "--force-color-profile=srgb",
         "--hide-scrollbars", f"--window-size={size[0]},{size[1]}",
         f"--screenshot={output}", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert output.exists(), result.stderr[-2000:]
    return Image.open(output).convert("RGB")


def marker_edges(screenshot: Image.Image) -> int:
    """Runs of the thumbnails' frame colour at least 200 pixels long, summed over the rows:
    each decoded thumbnail paints its 6-pixel frame's top and bottom edges (240 pixels wide),
    12 runs; a blocked or broken image paints none."""
    pixels = np.asarray(screenshot.convert("RGB")).astype(int)
    marker = ((pixels[..., 0] > 230) & (pixels[..., 1] < 30) & (pixels[..., 2] > 230))
    runs = 0
    for row in marker:
        edges = np.flatnonzero(np.diff(np.concatenate(([0], row.astype(int), [0]))))
        starts, ends = edges[::2], edges[1::2]
        runs += int(np.sum(ends - starts >= 200))
    return runs


@pytest.mark.browser
def test_chromium_shows_the_cards_and_decodes_the_thumbnails(tmp_path):
    path = tmp_path / "staging" / "sub-001" / "ses-01.review.html"
    write_review_page(path, TITLE, IMAGES, COUNTS, WHEN)
    dom = parse(render_in_chromium(path, tmp_path))
    # The OCR text's script did not run (it would retitle the page) and is shown as text.
    title = next(dom.iter("title")).text()
    assert title == f"Images to review: {TITLE}"
    assert not list(dom.iter("script"))
    assert [heading.text() for heading in dom.iter("h2")] == SECTION_HEADINGS
    assert [(section, details(card)["File"]) for section, card in cards(dom)] == EXPECTED_ORDER
    texts = [node.text() for node in dom.by_id("text-found").iter("span")
             if node.attrs.get("class") == "text"]
    assert texts == [SCRIPT_TEXT, "L R"]
    sources = [image.attrs["src"] for image in dom.iter("img")]
    assert len(sources) == 6
    assert all(base64.b64decode(source.split(",", 1)[1]).startswith(b"\x89PNG")
               for source in sources)
    # Decoded and painted: each of the 6 thumbnails' magenta frames is in the screenshot.
    screenshot = screenshot_in_chromium(path, tmp_path, tmp_path / "review.png")
    assert marker_edges(screenshot) == 6 * 12
