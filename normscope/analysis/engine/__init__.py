"""What every command runs on: the open model (names, roles and conventions over a checkpoint), the
per-tensor map over threads, processes or Ray, tensor selection, the architecture facts llama.cpp's plans
read, the type plans and the measuring engine of the quantization commands, and the clipping thresholds
that `clip`, `clip --sweep` and `forward` share."""

from .model import Model, open_model
from .parallel import map_tensors
from .select import select_tensors, selected
from .workers import Executor, ModelOpener

__all__ = ["Executor", "Model", "ModelOpener", "map_tensors", "open_model", "select_tensors", "selected"]
