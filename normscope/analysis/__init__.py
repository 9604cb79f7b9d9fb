"""Orchestration: turns io + quant + arch into results.

Three layers, imports pointing down only (tests/test_import_direction.py):
- `metrics/`: pure accumulators (weight statistics, exact quantiles, norm statistics, quantization error);
- `engine/`: the open model, the parallel map, selection, type plans, the measuring engine, clipping;
- the commands: `analyze/`, `simulate`, `compare/`, `clip/`, `check/`, `recipe/`, `forward/`. A command
  uses another only through that command's package (check runs analyze and simulate; compare runs analyze).
"""

from .analyze import analyze, analyze_model, analyze_tensor
from .check import check, check_model
from .clip import clip, clip_model, clip_sweep, clip_sweep_model
from .compare import compare, compare_models
from .engine import Model, open_model
from .forward import forward, forward_model
from .imatrix import collect_imatrix, collect_imatrix_model, compare_imatrices, summarize_imatrix
from .recipe import recipe, recipe_model
from .simulate import simulate, simulate_model

__all__ = ["Model", "analyze", "analyze_model", "analyze_tensor", "check", "check_model", "clip", "clip_model",
           "clip_sweep", "clip_sweep_model", "collect_imatrix", "collect_imatrix_model", "compare", "compare_imatrices",
           "compare_models", "forward", "forward_model", "open_model", "recipe", "recipe_model", "simulate",
           "simulate_model", "summarize_imatrix"]
