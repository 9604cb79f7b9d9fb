"""Checks every HTML report must pass: it loads nothing from the network and is well formed."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
RESOURCE_ATTRS = {"src", "href", "srcset", "action", "formaction", "data", "poster", "xlink:href", "background"}


class Page(HTMLParser):
    """Parses a page strictly enough for the tests: nesting, ids, references, tables and SVGs."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.ids: list[str] = []
        self.tables: dict[str, dict] = {}
        self._table: dict | None = None
        self._cell: list[str] | None = None
        self._cell_sort: str | None = None
        self.text_in: dict[str, list[str]] = {"style": [], "script": []}
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed: {self.stack}")

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if "id" in a:
            self.ids.append(a["id"])
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id") or f"#{len(self.tables)}",
                                                 {"headers": [], "rows": [], "num": []})
        elif tag == "tr" and self._table is not None:
            self._row: list[str] = []
        elif tag in ("td", "th") and self._table is not None:
            self._cell, self._cell_sort = [], a.get("data-sort")

    def handle_startendtag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if "id" in a:
            self.ids.append(a["id"])

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()
        t = self._table
        if tag in ("td", "th") and t is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            if tag == "th":
                t["num"].append(self._cell_sort == "num")
            self._cell = None
        elif tag == "tr" and t is not None:
            if t["headers"]:
                t["rows"].append(self._row)
            else:
                t["headers"] = self._row
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self.stack and self.stack[-1] in self.text_in:
            self.text_in[self.stack[-1]].append(data)


def parse(text: str) -> Page:
    return Page(text)


def assert_self_contained(html: str) -> Page:
    """No resource from outside the page: no link/img/iframe/script src, only url(#id), CSP set."""
    page = parse(html)
    assert not [t for t, _ in page.tags if t in ("link", "img", "iframe", "object", "embed", "base", "image")]
    assert all("src" not in a for t, a in page.tags if t == "script")
    for tag, attrs in page.tags:
        for name, value in attrs.items():
            if name in RESOURCE_ATTRS and value:
                assert value.startswith("#") or (tag == "a" and name == "href"), (tag, name, value)
            assert not re.search(r"url\((?!#)", value or ""), (tag, name, value)  # only url(#id) in the page
    css = "".join(page.text_in["style"])
    assert "@import" not in css and "url(" not in css and "@font-face" not in css
    js = "".join(page.text_in["script"])
    assert not re.search(r"fetch\(|XMLHttpRequest|import\(|\.src\s*=|WebSocket|sendBeacon", js)
    # every URL in the document is a plain link (<a href>) to read, never a resource
    links = sum(1 for t, a in page.tags if t == "a" and re.match(r"https?://", a.get("href") or ""))
    assert len(re.findall(r"https?://", html)) == links
    assert "default-src 'none'" in html  # and the browser enforces it (Content-Security-Policy)
    return page


def assert_well_formed(html: str) -> Page:
    """Tags nest, ids are unique, every #ref resolves, every SVG parses, every table row is full."""
    page = parse(html)
    assert not page.errors, page.errors
    assert len(page.ids) == len(set(page.ids)), "duplicate ids"
    refs = [v[1:] for _, a in page.tags for k, v in a.items() if k == "href" and v and v.startswith("#")]
    refs += [m for _, a in page.tags for v in a.values() if v for m in re.findall(r"url\(#([\w-]+)\)", v)]
    assert set(refs) <= set(page.ids), set(refs) - set(page.ids)
    for svg in re.findall(r"<svg\b.*?</svg>", html, flags=re.S):
        ET.fromstring(svg)
    for table in page.tables.values():
        assert all(len(row) == len(table["headers"]) for row in table["rows"])
    return page
