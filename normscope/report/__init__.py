"""Rendering: pure functions from result objects to text (terminal, Markdown, JSON, HTML).
Renderers never compute a statistic."""

from .html import analyze_html, report_html
from .json_report import to_json
from .markdown import analyze_markdown, md_table
from .tables import Table, analyze_header, analyze_tables
from .terminal import analyze_terminal, render_tables

__all__ = ["Table", "analyze_header", "analyze_html", "analyze_markdown", "analyze_tables", "analyze_terminal",
           "md_table", "render_tables", "report_html", "to_json"]
