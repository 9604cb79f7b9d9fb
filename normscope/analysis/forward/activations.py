"""The activation profile of `forward`'s base pass, recorded by forward hooks.

- Residual stream: each decoder layer's output h (tokens × hidden): its largest |h|, and the *massive
  activations* of Sun et al., "Massive Activations in Large Language Models" (2024, arXiv 2402.17762):
  |h| > 100 and > 1000 × the median |h| of the layer, which sit in a few fixed channels at a few tokens.
- MLP down projections: the largest input and output per channel. A super weight W[row, col]
  (Yu et al. 2024, arXiv 2411.07191) shows as an input spike in channel `col` that the weight turns
  into an output spike in channel `row` at the same token. A data-free candidate is confirmed when, at
  the token where its input channel peaks, that input is a spike (≥ 20 × the median |x|, and among the
  3 largest input channels of the text), its row is the largest output, and the single weight makes at
  least half of that output.
- fp16 range: every Linear, norm, embedding and decoder-layer output, and every down_proj input, whose
  |x| exceeds 65504 (what float16 can hold) would become inf in an fp16 run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...results import (ActivationProfile, LayerActivations, MassiveChannel, OverflowSite, Role, SuperWeightCandidate,
                        SuperWeightCheck, TensorInfo)

__all__ = ["ActivationRecorder", "FP16_MAX", "MASSIVE_ABS", "MASSIVE_RATIO", "SPIKE_RATIO"]

FP16_MAX = 65504.0
MASSIVE_ABS = 100.0  # Sun et al.: magnitude above 100 …
MASSIVE_RATIO = 1000.0  # … and about 1,000 times the median magnitude
SPIKE_RATIO = 20.0  # a down_proj input this many times its median |x| is a spike
SHARE = 0.5  # a confirmed super weight makes at least half of its output at the spike token
INPUT_RANK = 3  # … from one of the 3 largest down_proj input channels of the text
MAX_POSITIONS = 8

_LAYER_MODULE = re.compile(r"^(.*?(?:^|\.)(?:layers|layer|h|blocks|block)\.\d+)\.")


@dataclass
class _Max:
    """The largest |x| of a module, and how many values left the fp16 range."""

    max_abs: float = 0.0
    count: int = 0
    values: int = 0


@dataclass
class _Layer:
    layer: int
    module: str
    max_abs: float = 0.0
    max_position: int = 0
    max_channel: int = 0
    medians: list[float] = field(default_factory=list)
    channel_max: np.ndarray | None = None
    massive_count: np.ndarray | None = None
    massive_positions: dict[int, list[int]] = field(default_factory=dict)


@dataclass
class _Down:
    module: str
    weight: str
    in_max: np.ndarray | None = None  # (ffn,) max |x| per input channel over the text
    in_pos: np.ndarray | None = None
    out_max: np.ndarray | None = None  # (hidden,)
    out_pos: np.ndarray | None = None
    in_medians: list[float] = field(default_factory=list)
    out_medians: list[float] = field(default_factory=list)
    # candidate (row, col) -> (|x| at the peak, position, x, y[row], rank of row at that token, w·x)
    peaks: dict[tuple[int, int], tuple[float, int, float, float, int, float]] = field(default_factory=dict)


class ActivationRecorder:
    """Attach to a torch model for the base pass; `profile()` turns what the hooks saw into results.

    Args:
        torch_model: the transformers model.
        tensors: the checkpoint's tensors (roles and layers come from normscope's architecture specs).
        candidates: data-free super-weight candidates to confirm.
    """

    def __init__(self, torch_model: Any, tensors: Sequence[TensorInfo], candidates: Sequence[SuperWeightCandidate] = (),
                 massive_abs: float = MASSIVE_ABS, massive_ratio: float = MASSIVE_RATIO,
                 spike_ratio: float = SPIKE_RATIO):
        self.model = torch_model
        self.massive_abs, self.massive_ratio, self.spike_ratio = massive_abs, massive_ratio, spike_ratio
        self.candidates = list(candidates)
        modules = dict(torch_model.named_modules())
        self.layers: dict[str, _Layer] = {}
        self.downs: dict[str, _Down] = {}
        for t in tensors:
            if t.layer is None or t.param != "weight":
                continue
            m = _LAYER_MODULE.match(t.name)
            if m and m.group(1) in modules and m.group(1) not in self.layers:
                self.layers[m.group(1)] = _Layer(t.layer, m.group(1))
            if t.role is Role.MLP_DOWN and len(t.shape) == 2:
                module = t.name.rsplit(".", 1)[0]
                if module in modules:
                    self.downs[module] = _Down(module, t.name)
        self.watch = {name: _Max() for name, mod in modules.items()
                      if name and (name in self.layers or self._watched(mod)) and not name.endswith("lm_head")}
        self.down_inputs = {name: _Max() for name in self.downs}
        self.by_weight = {d.weight: d for d in self.downs.values()}
        self.offset = 0
        self._handles: list[Any] = []

    @staticmethod
    def _watched(mod: Any) -> bool:
        import torch

        kind = type(mod).__name__
        return isinstance(mod, (torch.nn.Linear, torch.nn.Embedding)) or "Norm" in kind or "Embedding" in kind

    # -- hooks -------------------------------------------------------------------------------------
    def attach(self) -> None:
        modules = dict(self.model.named_modules())
        for name in self.watch:
            self._handles.append(modules[name].register_forward_hook(self._hook(name)))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def window(self, offset: int) -> None:
        """The index of the next window's first token among all evaluation tokens."""
        self.offset = offset

    def _hook(self, name: str):
        def hook(module: Any, inputs: tuple, output: Any) -> None:
            out = output[0] if isinstance(output, (tuple, list)) else output
            if not hasattr(out, "abs"):
                return
            out = out.detach().float()
            _track(self.watch[name], out)
            if name in self.layers:
                self._layer(self.layers[name], out)
            if name in self.downs and inputs:
                x = inputs[0].detach().float()
                _track(self.down_inputs[name], x)
                self._down(self.downs[name], module, x, out)
        return hook

    def _layer(self, st: _Layer, h: Any) -> None:
        h = h.reshape(-1, h.shape[-1]).abs()  # (tokens, hidden)
        med = float(h.flatten().median())
        st.medians.append(med)
        flat = int(h.argmax())
        value = float(h.flatten()[flat])
        if value > st.max_abs:
            st.max_abs, st.max_position, st.max_channel = value, self.offset + flat // h.shape[1], flat % h.shape[1]
        cmax = h.max(dim=0).values.numpy()
        st.channel_max = cmax if st.channel_max is None else np.maximum(st.channel_max, cmax)
        massive = (h > max(self.massive_abs, self.massive_ratio * med)).numpy()  # (tokens, hidden)
        counts = massive.sum(axis=0)
        st.massive_count = counts if st.massive_count is None else st.massive_count + counts
        for t, c in np.argwhere(massive):
            pos = st.massive_positions.setdefault(int(c), [])
            if len(pos) < MAX_POSITIONS:
                pos.append(self.offset + int(t))

    def _down(self, st: _Down, module: Any, x: Any, y: Any) -> None:
        x = x.reshape(-1, x.shape[-1])  # (tokens, ffn)
        y = y.reshape(-1, y.shape[-1])  # (tokens, hidden)
        ax, ay = x.abs(), y.abs()
        st.in_medians.append(float(ax.flatten().median()))
        st.out_medians.append(float(ay.flatten().median()))
        for kind, a in (("in", ax), ("out", ay)):
            m = a.max(dim=0)
            vals, pos = m.values.numpy(), m.indices.numpy() + self.offset
            old = getattr(st, f"{kind}_max")
            if old is None:
                setattr(st, f"{kind}_max", vals.copy())
                setattr(st, f"{kind}_pos", pos.copy())
            else:
                better = vals > old
                old[better] = vals[better]
                getattr(st, f"{kind}_pos")[better] = pos[better]
        weight = module.weight.detach()
        for c in self.candidates:
            if c.tensor != st.weight:
                continue
            t = int(ax[:, c.col].argmax())
            xv = float(x[t, c.col])
            if st.peaks.get((c.row, c.col), (-1.0,))[0] >= abs(xv):
                continue
            yt = ay[t]
            rank = int((yt > yt[c.row]).sum()) + 1
            st.peaks[(c.row, c.col)] = (abs(xv), self.offset + t, xv, float(y[t, c.row]), rank,
                                        float(weight[c.row, c.col]) * xv)

    # -- results -----------------------------------------------------------------------------------
    def profile(self, token_texts: Sequence[str], layers_of: dict[str, int | None]) -> ActivationProfile:
        """The recorded profile; `token_texts` are the evaluation tokens as text, `layers_of` maps tensors to layers."""
        def text(pos: int | None) -> str:
            return token_texts[pos] if pos is not None and 0 <= pos < len(token_texts) else ""

        layers = []
        for st in sorted(self.layers.values(), key=lambda s: s.layer):
            massive = []
            if st.massive_count is not None:
                for c in np.flatnonzero(st.massive_count):
                    pos = tuple(st.massive_positions.get(int(c), ()))
                    massive.append(MassiveChannel(int(c), int(st.massive_count[c]), float(st.channel_max[c]), pos,
                                                  tuple(text(p) for p in pos)))
            massive.sort(key=lambda m: -m.max_abs)
            down = next((d for d in self.downs.values() if layers_of.get(d.weight) == st.layer), None)
            extra = {}
            if down is not None and down.in_max is not None:
                ci, co = int(down.in_max.argmax()), int(down.out_max.argmax())
                extra = dict(down_in_max_abs=float(down.in_max[ci]), down_in_channel=ci,
                             down_in_position=int(down.in_pos[ci]),
                             down_in_median_abs=float(np.median(down.in_medians)),
                             down_out_max_abs=float(down.out_max[co]), down_out_channel=co,
                             down_out_position=int(down.out_pos[co]),
                             down_out_median_abs=float(np.median(down.out_medians)))
            median = float(np.median(st.medians)) if st.medians else 0.0
            layers.append(LayerActivations(st.layer, st.module, st.max_abs, st.max_position, st.max_channel,
                                           text(st.max_position), median, tuple(massive), **extra))
        checks = []
        for c in self.candidates:
            down = self.by_weight.get(c.tensor)
            peak = down.peaks.get((c.row, c.col)) if down is not None else None
            if peak is None:
                continue
            _, pos, xv, yv, out_rank, contrib = peak
            in_med = float(np.median(down.in_medians)) or 1e-30
            out_med = float(np.median(down.out_medians)) or 1e-30
            in_rank = int((down.in_max > down.in_max[c.col]).sum()) + 1
            share = abs(contrib) / abs(yv) if yv else 0.0
            in_ratio, out_ratio = abs(xv) / in_med, abs(yv) / out_med
            # the input spike meets the weight and becomes the largest output at that token (Yu et al. 2024)
            confirmed = (in_ratio >= self.spike_ratio and in_rank <= INPUT_RANK and out_rank == 1
                         and share >= SHARE)
            checks.append(SuperWeightCheck(c.tensor, layers_of.get(c.tensor), c.row, c.col, c.value, c.z, pos,
                                           text(pos), abs(xv), in_ratio, in_rank, abs(yv), out_ratio, out_rank,
                                           share, confirmed))
        sites = [OverflowSite(name, m.max_abs, m.count, m.values) for name, m in self.watch.items()]
        sites += [OverflowSite(f"{name} (input)", m.max_abs, m.count, m.values) for name, m in self.down_inputs.items()]
        largest = max(sites, key=lambda s: s.max_abs, default=None)
        overflow = tuple(sorted((s for s in sites if s.count), key=lambda s: -s.max_abs))
        return ActivationProfile(tuple(layers), tuple(checks), overflow, largest,
                                 {"massive_abs": self.massive_abs, "massive_ratio": self.massive_ratio,
                                  "spike_ratio": self.spike_ratio, "share": SHARE, "input_rank": INPUT_RANK,
                                  "fp16_max": FP16_MAX})


def _track(st: _Max, x: Any) -> None:
    a = x.abs()
    st.max_abs = max(st.max_abs, float(a.max())) if a.numel() else st.max_abs
    st.count += int((a > FP16_MAX).sum())
    st.values += int(a.numel())
