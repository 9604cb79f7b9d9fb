"""`analyze`: every tensor profiled in one streaming pass, norms read in their own convention, explained."""

from .command import analyze, analyze_model, analyze_tensor

__all__ = ["analyze", "analyze_model", "analyze_tensor"]
