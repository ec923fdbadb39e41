"""The review page of a session: one self-contained HTML page that shows a person the images
they must look at (text OCR read in the pixels, images that could not be decoded, images at
risk of burned-in text, one image per series), as thumbnails of the staged files.

The page shows what will be uploaded, so it is as sensitive as the staged copy: it is written
beside the staged session in staging (``{session}.review.html``), owner-only, and never into
the results folder. Like the run's report page (``deidpipe.report``) it has inline CSS, no
script and a strict content security policy; every value is escaped with html.escape where it
is put into the page. The thumbnails are inline ``data:`` URIs, the one thing the policy lets
the page load.
"""

import base64
import html
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from deidpipe.files import write_private_bytes

MAX_CARDS = 500
COUNT_KEYS = ("images", "frames", "read", "with_text", "matched", "not_decoded")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Nothing but inline style and the thumbnails' data: URIs; no script, no fetch, no form, no
# <base>. default-src 'none' covers script-src, so no script runs even if markup slipped in.
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                           "base-uri 'none'; form-action 'none'")

REASON_MATCHED = "matches an identifier"
REASON_TEXT = "text found"
REASON_NOT_DECODED = "could not be decoded"
REASON_AT_RISK = "at risk of burned-in text"
REASON_SAMPLE = "series sample"


@dataclass(frozen=True)
class ReviewText:
    """One line OCR read in a frame."""

    text: str  # what OCR read (may hold an identifier: this page is as private as the images)
    matched: str  # '' or the source attribute it matched, e.g. 'PatientName' (a leak)
    box: tuple[tuple[int, int], ...]  # 4 corners, image pixels


@dataclass(frozen=True)
class ReviewImage:
    """One frame to show, with why it is shown."""

    file: str  # staged file path relative to the staged session folder
    frame: int  # 0-based frame number (the page shows it counting from 1, as the report does)
    series: str  # series label, e.g. '1 - T1w'
    reasons: tuple[str, ...]  # why it is shown (the REASON_* words)
    png: bytes  # thumbnail PNG (boxes already drawn); b'' when it could not be decoded
    texts: tuple[ReviewText, ...]
    problem: str = ""  # a decode problem in plain words


@dataclass(frozen=True)
class _Section:
    section_id: str
    title: str
    severity: str  # fail, warn or look: the colour of the section's edge
    explanation: str
    empty: str  # the sentence when no image is in the section


SECTIONS = (
    _Section("matched", "Text that matches an identifier", "fail",
             "fail: these block the upload. OCR read text in these images that matches an "
             "identifier of the source; the line and the attribute it matched are marked. The "
             "session is not uploaded while they are in it: leave the series out or have the "
             "images redacted, then run again.",
             "No text that OCR read matches an identifier."),
    _Section("text-found", "Other text found", "warn",
             "warn: read every line. It matches no identifier of the header, but it can be a "
             "name, a date or a number the header never held. If it identifies the person, "
             "leave the series out or have the images redacted, then run again.",
             "OCR found no other text."),
    _Section("not-decoded", "Could not be decoded", "warn",
             "OCR could not read the pixels of these images, so no program has looked for "
             "text in them: a person must open each one in a DICOM viewer and look.",
             "No image failed to decode."),
    _Section("at-risk", "At risk of burned-in text", "warn",
             "Images of classes where burned-in text is common (secondary captures, "
             "ultrasound, screen saves, dose reports) in which OCR found no text. OCR misses "
             "small, faint or slanted text: look at each one.",
             "No other image is of a class at risk of burned-in text."),
    _Section("series-sample", "One image per series", "look",
             "One image of each series, for the eye: check that nothing in the picture "
             "identifies the person (a face, a name on a label or a screen, a photographed "
             "form).",
             "No series sample to show."),
)

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Arial, sans-serif; color: #111;
       line-height: 1.45; max-width: 90rem; margin: 1.5rem auto; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .3rem; overflow-wrap: anywhere; }
h2 { font-size: 1.3rem; margin-top: 2rem; border-bottom: 2px solid #444; }
p.explain { margin: .3rem 0 .6rem; max-width: 60rem; }
dl.run { display: grid; grid-template-columns: max-content auto; gap: .15rem 1rem; }
dl.run dt { font-weight: bold; }
dl.run dd { margin: 0; font-family: ui-monospace, Consolas, monospace; overflow-wrap: anywhere; }
.private { border: 4px solid #b00000; background: #fde0e0; padding: .4rem 1rem;
           margin: 1rem 0; max-width: 60rem; }
.private strong { color: #8b0000; }
p.counts { font-size: 1.1rem; font-weight: bold; margin: .4rem 0; }
p.counts + p.counts { font-size: 1rem; font-weight: normal; }
nav ul { margin: .3rem 0; }
section { border-left: 6px solid #888; padding-left: .8rem; }
section.severity-fail { border-left-color: #b00000; }
section.severity-fail h2 { color: #8b0000; border-bottom-color: #b00000; }
section.severity-warn { border-left-color: #c08a00; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(20rem, 1fr));
         gap: 1rem; }
.card { border: 1px solid #888; border-radius: .3rem; padding: .5rem; background: #fafafa;
        break-inside: avoid; }
.severity-fail .card { border: 2px solid #b00000; }
.card img { display: block; max-width: 100%; height: auto; margin: 0 auto .4rem;
            background: #000; }
.no-image { border: 2px dashed #8b0000; color: #8b0000; padding: 1.5rem .5rem;
            text-align: center; margin-bottom: .4rem; font-weight: bold; }
dl.details { display: grid; grid-template-columns: max-content auto; gap: .1rem .6rem;
             margin: 0 0 .3rem; font-size: .92rem; }
dl.details dt { font-weight: bold; }
dl.details dd { margin: 0; overflow-wrap: anywhere; }
dd.file { font-family: ui-monospace, Consolas, monospace; }
h3 { font-size: .95rem; margin: .4rem 0 .1rem; }
ol.texts { margin: 0; padding-left: 1.6rem; font-size: .92rem; }
ol.texts li { margin: .15rem 0; }
ol.texts .text { font-family: ui-monospace, Consolas, monospace; white-space: pre-wrap;
                 overflow-wrap: anywhere; background: #fff; border: 1px solid #ccc;
                 padding: 0 .2rem; }
ol.texts li.matched .text { background: #fde0e0; border-color: #b00000; }
.where { color: #555; font-size: .85rem; }
.status { font-weight: bold; padding: 0 .35rem; border: 1px solid; border-radius: .2rem;
          white-space: nowrap; }
.status-fail { background: #fde0e0; color: #8b0000; }
p.none { font-size: .92rem; margin: .2rem 0; }
p.more { font-weight: bold; }
footer { margin-top: 2.5rem; font-size: .85rem; color: #444; }
@media print {
  body { max-width: none; margin: 0; font-size: 10pt; }
  .private, .status, .card, section { print-color-adjust: exact;
                                      -webkit-print-color-adjust: exact; }
}
"""


def _escape(value: object) -> str:
    return html.escape(str(value))


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else (plural or singular + 's')}"


def _section_of(image: ReviewImage) -> str:
    """The one section an image is shown in: the most urgent of its reasons."""
    if REASON_MATCHED in image.reasons or any(text.matched for text in image.texts):
        return "matched"
    if REASON_TEXT in image.reasons or image.texts:
        return "text-found"
    if REASON_NOT_DECODED in image.reasons or not image.png or image.problem:
        return "not-decoded"
    if REASON_AT_RISK in image.reasons:
        return "at-risk"
    return "series-sample"


def _png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk (so the page lays out before it decodes)."""
    if not png.startswith(PNG_SIGNATURE) or png[12:16] != b"IHDR" or len(png) < 24:
        raise ValueError("a review thumbnail must be a PNG image")
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def counts_sentences(counts: dict[str, int]) -> list[str]:
    """The counts in words, e.g. 'OCR read 12 of 340 frames in 120 images; 2 frames hold
    text, 1 matches an identifier.'"""
    missing = [key for key in COUNT_KEYS if key not in counts]
    if missing:
        raise ValueError(f"the review page's counts lack {', '.join(missing)}")
    images, frames, read, with_text, matched, not_decoded = (int(counts[key])
                                                             for key in COUNT_KEYS)
    if with_text == 0:
        text = "no frame holds text"
    else:
        text = f"{with_text} {'frame holds' if with_text == 1 else 'frames hold'} text, "
        text += ("none matches an identifier" if matched == 0 else
                 f"{matched} {'matches' if matched == 1 else 'match'} an identifier")
    sentences = [f"OCR read {read} of {_plural(frames, 'frame')} in {_plural(images, 'image')}; "
                 f"{text}."]
    if read < frames:
        sentences.append(f"The other {_plural(frames - read, 'frame')} were not read by OCR: "
                         "nothing on this page says they are free of text.")
    if not_decoded:
        sentences.append(f"{_plural(not_decoded, 'frame')} could not be decoded: a person "
                         f"must open {'it' if not_decoded == 1 else 'them'} (see 'Could not be "
                         "decoded').")
    return sentences


def _texts_html(image: ReviewImage) -> str:
    if not image.texts:
        none = ("No text: the frame could not be decoded." if not image.png
                else "No text recognised in this frame.")
        return f'<p class="none">{_escape(none)}</p>'
    lines = []
    for line in image.texts:
        where = ""
        if line.box:
            left = round(min(x for x, _y in line.box))
            top = round(min(y for _x, y in line.box))
            where = f' <span class="where">(at x {left}, y {top})</span>'
        if line.matched:
            lines.append(f'<li class="matched"><span class="status status-fail">matches '
                         f'{_escape(line.matched)}</span> <span class="text">'
                         f'{_escape(line.text)}</span>{where}</li>')
        else:
            lines.append(f'<li><span class="text">{_escape(line.text)}</span>{where}</li>')
    return (f"<h3>Text read ({_plural(len(image.texts), 'line')})</h3>\n"
            f'<ol class="texts">{"".join(lines)}</ol>')


def _card(image: ReviewImage) -> str:
    # Counting from 1, as the verification report's findings do ("frame 3 of 10").
    frame = f"{image.frame + 1} (counting from 1)"
    if image.png:
        width, height = _png_size(image.png)
        data = base64.b64encode(image.png).decode("ascii")
        alt = f"{image.file}, frame {frame}"
        picture = (f'<img src="data:image/png;base64,{data}" alt="{_escape(alt)}" '
                   f'width="{width}" height="{height}">')
    else:
        picture = '<div class="no-image">No thumbnail: the image could not be decoded</div>'
    details = [("File", image.file, ' class="file"'), ("Frame", frame, ""),
               ("Series", image.series, ""),
               ("Why shown", "; ".join(image.reasons) or "not given", "")]
    if image.problem:
        details.append(("Problem", image.problem, ""))
    details_html = "".join(f"<dt>{_escape(term)}</dt><dd{css}>{_escape(value)}</dd>"
                           for term, value, css in details)
    return (f'<article class="card">\n{picture}\n<dl class="details">{details_html}</dl>\n'
            f"{_texts_html(image)}\n</article>")


def render_review_page(title: str, images: Sequence[ReviewImage], counts: dict[str, int],
                       generated_at: datetime) -> str:
    """The review page of one session (``title``: the session, e.g. group/project/sub/ses).

    Images are shown in sections, most urgent first, each image once (in the section of its
    most urgent reason), in the order given; at most MAX_CARDS cards in all."""
    by_section: dict[str, list[ReviewImage]] = {section.section_id: [] for section in SECTIONS}
    for image in images:
        by_section[_section_of(image)].append(image)
    when = f"{generated_at:%Y-%m-%d %H:%M} {generated_at:%Z}".strip()
    room = MAX_CARDS
    sections, contents = [], []
    for section in SECTIONS:
        members = by_section[section.section_id]
        shown, room = members[:room], room - len(members[:room])
        left_out = len(members) - len(shown)
        parts = [f'<p class="explain">{_escape(section.explanation)}</p>']
        if not members:
            parts.append(f'<p class="none">{_escape(section.empty)}</p>')
        if shown:
            parts.append('<div class="cards">\n' + "\n".join(_card(image) for image in shown)
                         + "\n</div>")
        if left_out:
            parts.append(f'<p class="more">{_escape(_plural(left_out, "more image"))} in this '
                         f"section not shown: the page shows at most {MAX_CARDS}. The "
                         "verification report lists them all.</p>")
        sections.append(f'<section id="{section.section_id}" class="severity-'
                        f'{section.severity}">\n<h2>{_escape(section.title)}</h2>\n'
                        + "\n".join(parts) + "\n</section>")
        contents.append(f'<li><a href="#{section.section_id}">{_escape(section.title)}</a>: '
                        f"{_escape(_plural(len(members), 'image'))}</li>")
    not_shown = max(0, len(images) - MAX_CARDS)
    counts_html = "".join(f'<p class="counts">{_escape(sentence)}</p>'
                          for sentence in counts_sentences(counts))
    if not_shown:
        counts_html += (f'<p class="more">{_escape(_plural(not_shown, "more image"))} '
                        f"{'was' if not_shown == 1 else 'were'} not shown: this page shows at "
                        f"most {MAX_CARDS}, the most urgent first. The verification report "
                        "lists them all.</p>")
    private = (
        "<strong>Private.</strong> This page shows the images as they will be uploaded and "
        "the text OCR read in them, which can hold names and other identifiers. It is as "
        "sensitive as the staged files: it stays beside them in staging, readable by you "
        "only. Do not copy, upload or share it.")
    header = (
        f'<header id="session">\n<h1>Images to review: {_escape(title)}</h1>\n'
        f'<dl class="run"><dt>Session</dt><dd>{_escape(title)}</dd>'
        f"<dt>Written</dt><dd>{_escape(when)}</dd></dl>\n"
        f'<p class="explain">The images of this session that a person must look at before '
        "it is uploaded: text read in the pixels (OCR), images that could not be decoded, "
        "images at risk of burned-in text, and one image of each series. Boxes on the "
        "thumbnails mark the text OCR found.</p>\n"
        f'<p class="private">{private}</p>\n{counts_html}\n'
        f'<nav><ul>{"".join(contents)}</ul></nav>\n</header>')
    footer = ("Written by deidpipe when the session was verified. Keep this page private: it "
              "shows the staged images and the text read in them.")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Images to review: {_escape(title)}</title>\n<style>{STYLE}</style>\n"
        f"</head>\n<body>\n{header}\n<main>\n" + "\n".join(sections)
        + f"\n</main>\n<footer><p>{_escape(footer)}</p></footer>\n</body>\n</html>\n")


def write_review_page(path: str | Path, title: str, images: Sequence[ReviewImage],
                      counts: dict[str, int], generated_at: datetime | None = None) -> None:
    """Write the review page atomically, owner-only (0600), at ``path`` (see
    deidpipe.paths.review_page_beside: beside the staged session, never in results)."""
    when = generated_at or datetime.now().astimezone()
    page = render_review_page(title, images, counts, when)
    write_private_bytes(path, page.encode("utf-8"))
