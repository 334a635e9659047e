"""Test helper: read back what a session report (HTML) shows: its sections, tables and images."""

from __future__ import annotations

import base64
import html
import io
import re

from PIL import Image

_IMG = re.compile(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')
_CELL = re.compile(r"<td[^>]*>(.*?)</td>", re.S)
_TAG = re.compile(r"<[^>]+>")


def images(document: str) -> dict[str, Image.Image]:
    """The embedded PNG figures by their alt text, each decoded (raises if one is not a PNG)."""
    found = {}
    for alt, data in _IMG.findall(document):
        image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
        image.load()
        assert image.format == "PNG", alt
        found[html.unescape(alt)] = image
    return found


def section(document: str, anchor: str) -> str:
    """The HTML of the section whose heading has ``id=anchor``, up to the next heading."""
    start = document.index(f"<h2 id='{anchor}'>")
    end = document.find("<h2", start + 1)
    return document[start : end if end >= 0 else len(document)]


def rows(fragment: str) -> list[list[str]]:
    """The body rows of the tables in ``fragment``, as plain text cells."""
    body = re.findall(r"<tbody>(.*?)</tbody>", fragment, re.S)
    return [
        [html.unescape(_TAG.sub("", cell)).strip() for cell in _CELL.findall(row)]
        for part in body
        for row in re.findall(r"<tr>(.*?)</tr>", part, re.S)
    ]
