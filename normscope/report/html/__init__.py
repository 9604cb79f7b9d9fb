"""HTML reports: one self-contained file per report (inline CSS, inline SVG plots, a little JS).

A report is a list of `Section`s built by one module per result type and registered with
`register_sections`; `html_page` renders any list of sections, `report_html` the sections of any
registered results on one page. See docs/reports.md.
"""

from .analyze import analyze_html, analyze_sections, norm_gain_grid, outlier_grid
from .check import check_sections
from .clip import clip_sections, sweep_sections
from .compare import compare_sections
from .forward import forward_sections
from .grid import Grid, layer_grid
from .imatrix import imatrix_compare_sections, imatrix_sections
from .page import Block, Card, Figure, Note, Notes, Section, Text, Verdict, html_page
from .recipe import recipe_sections
from .registry import register_sections, report_html, sections_for
from .simulate import simulate_sections

__all__ = ["Block", "Card", "Figure", "Grid", "Note", "Notes", "Section", "Text", "analyze_html", "analyze_sections",
           "check_sections", "clip_sections", "compare_sections", "forward_sections", "html_page", "imatrix_compare_sections", "imatrix_sections", "layer_grid", "norm_gain_grid",
           "outlier_grid", "recipe_sections", "register_sections", "report_html", "sections_for", "simulate_sections",
           "sweep_sections", "Verdict"]
