"""`imatrix`: importance matrices summarised and compared (`summary`), and collected with torch (`collect`)."""

from .collect import collect_imatrix, collect_imatrix_model
from .summary import compare_imatrices, imatrix_coverage, summarize_imatrix

__all__ = ["collect_imatrix", "collect_imatrix_model", "compare_imatrices", "imatrix_coverage",
           "summarize_imatrix"]
