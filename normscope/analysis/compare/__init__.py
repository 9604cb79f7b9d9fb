"""`compare`: variants against a base, tensor by tensor across formats, and by role and depth."""

from .command import compare, compare_models

__all__ = ["compare", "compare_models"]
