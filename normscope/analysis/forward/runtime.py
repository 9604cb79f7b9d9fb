"""`forward --runtime llama.cpp`: each quantized weight's matmul sees its input as ggml-cpu quantizes it.

A forward pre-hook on every torch Linear whose weight a variant quantized replaces the input by
`runtime_activations(x, vec_dot_type of the weight's type)`: Q8_0, Q8_1 or Q8_K blocks along the
reduction dimension (normscope.quant.runtime). The output head of a tied model is the embedding's
Linear twin: it takes the embedding's type, as llama.cpp's output matmul reads token_embd; the
embedding lookup itself (ggml_get_rows) dequantizes rows and quantizes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ...errors import ConfigError
from ...quant.runtime import RUNTIMES, activation_type, runtime_activations
from ...results import TensorInfo

__all__ = ["RuntimeHooks", "check_runtime", "runtime_of"]


def check_runtime(runtime: str | None) -> str | None:
    """`runtime` itself when it is one normscope models (None: the default per scheme)."""
    if runtime is not None and runtime not in RUNTIMES:
        raise ConfigError(f"--runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
    return runtime


def runtime_of(runtime: str | None, gguf: bool) -> str:
    """The runtime a variant is scored under: llama.cpp's for a llama.cpp scheme unless `weights` was asked;
    a simulated scheme (int4, fp8, …) has no llama.cpp kernel, so its weights are all there is."""
    if not gguf:
        return "weights"
    return runtime or "llama.cpp"


class RuntimeHooks:
    """Quantize the inputs of the Linear modules that hold given weights, the way ggml-cpu does."""

    def __init__(self, torch_model: Any, editor: Any):
        import torch

        self._torch = torch
        self.editor = editor
        self.linears: dict[int, list[Any]] = {}  # id(weight parameter) -> the Linear modules that multiply by it
        for module in torch_model.modules():
            if isinstance(module, torch.nn.Linear):
                self.linears.setdefault(id(module.weight), []).append(module)
        self._handles: list[Any] = []

    def attach(self, pairs: Iterable[tuple[TensorInfo, str]]) -> int:
        """Hook every Linear of the (tensor, ggml type) pairs; returns how many modules were hooked."""
        for info, fmt in pairs:
            act = activation_type(fmt)
            param = self.editor.find(info.name)
            if act is None or param is None:
                continue
            for module in self.linears.get(id(param), ()):
                self._handles.append(module.register_forward_pre_hook(self._hook(act)))
        return len(self._handles)

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, act: str):
        torch = self._torch

        def hook(module: Any, args: tuple) -> tuple:
            x = args[0]
            q = runtime_activations(x.detach().float().contiguous().numpy(), act)
            return (torch.from_numpy(q).to(x.dtype), *args[1:])
        return hook
