"""Rendering: pure functions from result objects to text (terminal, Markdown, JSON, HTML).
Renderers never compute a statistic.

Every result type registers its terminal and Markdown renderers (`text.register_text`) and its HTML
sections (`html.register_sections`), so `terminal_report`, `markdown_report`, `report_html` and `to_json`
render any result.
"""

from . import analyze, check, clip, compare, forward, imatrix, recipe, simulate  # noqa: F401  (register the renderers)
from .analyze import analyze_header, analyze_markdown, analyze_tables, analyze_terminal
from .html import analyze_html, report_html
from .json_report import to_json
from .markdown import md_report, md_table
from .tables import Table
from .terminal import render_tables
from .text import markdown_report, register_text, terminal_report

__all__ = ["Table", "analyze_header", "analyze_html", "analyze_markdown", "analyze_tables", "analyze_terminal",
           "markdown_report", "md_report", "md_table", "register_text", "render_tables", "report_html",
           "terminal_report", "to_json"]
