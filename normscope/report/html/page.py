"""The HTML page every report shares: sections made of blocks, rendered into one self-contained file.

A report is a list of `Section`s; a section is a heading and an ordered tuple of blocks: `Card`
(label/value facts), `Table` (the same `report.tables.Table` the terminal and Markdown use), `Figure`
(an SVG from `report.plots`, with the numbers behind it), `Notes` (severity-tagged sentences) and
`Text` (a paragraph), `Verdict` (the lines a report opens with). Each block kind has one template, `templates/block_<kind>.html.j2`. The page
inlines its CSS and JS (no network), escapes every string, and gives every section, table and SVG id
a unique prefix so that sections from different results can share one page.

Jinja escapes HTML but not control characters: every value a template prints passes through
`fmt.visible` first (the environment's `finalize`), and the finished page once more (line breaks kept), so
that the text of an SVG label cannot carry one either.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from typing import Any, ClassVar

from markupsafe import Markup

from ..fmt import visible
from ..plots import scope_ids
from ..tables import Table

__all__ = ["Card", "Figure", "Note", "Notes", "Text", "Verdict", "Block", "Section", "html_page", "FILTER_ROWS"]

FILTER_ROWS = 8  # tables and note lists longer than this get a filter box


@dataclass(frozen=True)
class Card:
    """A titled box of (label, value) facts, e.g. the summary of a checkpoint."""

    title: str
    facts: tuple[tuple[str, str], ...]
    kind: ClassVar[str] = "card"


@dataclass(frozen=True)
class Figure:
    """An inline SVG (from `report.plots`) with a caption and, collapsed below it, the numbers it shows."""

    svg: str
    caption: str
    data: Table | None = None
    kind: ClassVar[str] = "figure"


@dataclass(frozen=True)
class Note:
    severity: str  # "info", "warning", "error"
    text: str
    subject: str = ""  # what the note is about, e.g. a tensor name


@dataclass(frozen=True)
class Notes:
    """A list of plain-words findings or warnings."""

    title: str
    items: tuple[Note, ...]
    kind: ClassVar[str] = "notes"


@dataclass(frozen=True)
class Verdict:
    """The lines a report opens with: what matters in this checkpoint and what to do (`text.verdict`)."""

    lines: tuple[str, ...]
    kind: ClassVar[str] = "verdict"


@dataclass(frozen=True)
class Text:
    """A paragraph of plain text (escaped, never HTML)."""

    text: str
    kind: ClassVar[str] = "text"


Block = Card | Figure | Notes | Text | Table | Verdict


@dataclass(frozen=True)
class Section:
    """A heading and its blocks, in order. `id` is the anchor (default: from the heading)."""

    heading: str
    blocks: tuple[Block, ...]
    id: str = ""
    template: str = "section.html.j2"  # a section with its own layout names its own template


@dataclass
class _Placed:
    """A block as the templates see it: its kind, the block, and a page-unique id."""

    kind: str
    block: Any
    id: str
    svg: str = ""
    align: tuple[str, ...] = field(default_factory=tuple)  # per column: "l" or "r"
    numeric: tuple[bool, ...] = field(default_factory=tuple)  # per column: sorts as numbers


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


_NUMBER = re.compile(r"-?[\d,]*\.?\d+(?:e[+-]?\d+)?%?|-?inf|nan|—")


def _align(t: Table) -> tuple[str, ...]:
    return tuple((t.align[i] if i < len(t.align) else ("l" if i == 0 else "r")) for i in range(len(t.headers)))


def _numeric(t: Table) -> tuple[bool, ...]:
    # a column sorts as numbers when every cell is one ("1,348", "1.5e-05", "63.1%", "nan", "—")
    return tuple(bool(t.rows) and all(_NUMBER.fullmatch(row[i]) for row in t.rows) for i in range(len(t.headers)))


class _Ids:
    def __init__(self) -> None:
        self.seen: set[str] = set()

    def __call__(self, base: str) -> str:
        name, n = base, 1
        while name in self.seen:
            n += 1
            name = f"{base}-{n}"
        self.seen.add(name)
        return name


def _place(block: Block, section_id: str, ids: _Ids) -> _Placed:
    if isinstance(block, Table):
        return _Placed("table", block, ids(f"{section_id}-table"), align=_align(block), numeric=_numeric(block))
    placed = _Placed(block.kind, block, ids(f"{section_id}-{block.kind}"))
    if isinstance(block, Figure):
        if not block.svg.startswith("<svg"):
            raise ValueError(f"Figure {block.caption!r}: svg must be an SVG from normscope.report.plots, "
                             f"got {block.svg[:40]!r}")
        placed.svg = Markup(scope_ids(block.svg, placed.id + "-"))  # our own SVG, inserted unescaped
        if block.data is not None:
            placed.align, placed.numeric = _align(block.data), _numeric(block.data)
    return placed


_CODE_SPAN = re.compile(r"`([^`\n]+)`")


def code_spans(text: str) -> Markup:
    """Prose written for terminals and Markdown ("see `normscope simulate`") with its backtick spans as `<code>`:
    escaped and made visible first, so a name in the text stays data.

    Example:
        >>> str(code_spans("see `normscope simulate` <now>"))
        'see <code>normscope simulate</code> &lt;now&gt;'
    """
    escaped = str(Markup.escape(visible(text)))
    return Markup(_CODE_SPAN.sub(lambda m: f"<code>{m[1]}</code>", escaped))


def _shown(value: Any) -> Any:
    # plain strings are data (names, paths); Markup is the page's own (SVG, CSS, JS, rendered macros)
    return value if isinstance(value, Markup) or not isinstance(value, str) else visible(value)


@cache
def _env() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader(__package__, "templates"), autoescape=select_autoescape(["j2"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                      finalize=_shown)
    env.globals["FILTER_ROWS"] = FILTER_ROWS
    env.filters["code_spans"] = code_spans
    return env


@cache
def _static(name: str) -> str:
    return (files(__package__) / "static" / name).read_text(encoding="utf-8")


def html_page(title: str, sections: Sequence[Section], subtitle: str = "", footer: str = "") -> str:
    """One self-contained HTML document: inline CSS, inline SVG, a few lines of JS, no external resources.

    Args:
        title: the page title and top heading.
        sections: rendered in order, each listed in the navigation bar.
        subtitle: one line under the title (e.g. the source).
        footer: one line at the bottom (e.g. the schema the numbers come from).

    Returns:
        The HTML text.

    Example:
        >>> page = html_page("demo", [Section("Facts", (Card("Model", (("layers", "18"),)),))])
        >>> "<h2" in page and "://" not in page
        True
    """
    ids = _Ids()
    placed = []
    for s in sections:
        sid = ids(s.id or _slug(s.heading))
        placed.append((s, sid, [_place(b, sid, ids) for b in s.blocks]))
    page = _env().get_template("page.html.j2").render(
        title=title, subtitle=subtitle, footer=footer, sections=placed,
        css=Markup(_static("report.css")), js=Markup(_static("report.js")))
    return visible(page, keep="\n")
