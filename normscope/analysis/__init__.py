"""Orchestration: turns io + quant + arch into results (analyze, simulate, clip, compare, check)."""

from .analyze import analyze, analyze_model, analyze_tensor
from .model import Model, open_model

__all__ = ["Model", "analyze", "analyze_model", "analyze_tensor", "open_model"]
