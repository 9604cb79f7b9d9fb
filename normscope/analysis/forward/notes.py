"""Plain-words readings of a forward result: what each variant costs, why a clip hurts, what the
activation profile says (fp16 range, massive activations, super weights)."""

from __future__ import annotations

from collections.abc import Sequence

from ...quant import is_gguf_scheme
from ...results import ActivationProfile, ForwardVariant, GroupSensitivity

__all__ = ["forward_notes"]


def _pct(x: float) -> str:
    return f"{100.0 * x:.1f}%"


def _runtime_part(v: ForwardVariant) -> str:
    if v.weights_kl is None:
        return ""
    return (f"; under llama.cpp's runtime: the weights alone cost {v.weights_kl.mean:.4g}, the rest is its "
            "quantized matmul inputs")


def forward_notes(base: ForwardVariant, variants: Sequence[ForwardVariant], profile: ActivationProfile | None,
                  sensitivity: Sequence[GroupSensitivity] = ()) -> tuple[str, ...]:
    notes = []
    schemes = [v for v in variants if v.kind == "scheme" and v.kl is not None]
    for v in variants:
        if v.kl is None:
            continue
        notes.append(f"{v.label}: mean KL {v.kl.mean:.4g} nats per token (p99 {v.kl.p99:.4g}, max {v.kl.max:.4g}), "
                     f"top-1 agreement {_pct(v.top1_agreement)}, perplexity {base.perplexity:.4g} → "
                     f"{v.perplexity:.4g}" + _runtime_part(v))
    # a llama.cpp plan with fewer bits whose weights hurt less than one with more: the base already lies on its
    # grid (a claim about the weights: compared on the weight-only KL where the runtime adds its own)
    gguf = [v for v in schemes if v.scheme and is_gguf_scheme(v.scheme) and v.bits_per_weight is not None]
    wkl = {v.label: (v.weights_kl or v.kl).mean for v in gguf}
    for a in gguf:
        beaten = [b.label for b in gguf if a.bits_per_weight < b.bits_per_weight and wkl[a.label] < wkl[b.label]]
        if beaten:
            notes.append(f"{a.label}'s weights ({a.bits_per_weight:.2f} bpw) change the outputs less than those of "
                         f"{', '.join(beaten)} with more bits: the base's weights already lie (almost) on "
                         f"{a.label}'s grid, as in a checkpoint dequantized from a {a.label} GGUF, so re-quantizing "
                         "to it is nearly lossless while the larger types round onto another grid")
    for v in variants:
        if v.kind != "clip" or v.kl is None:
            continue
        if not v.changed_tensors:
            notes.append(f"{v.label} changed nothing: every gain is within its tensor's percentile")
            continue
        what = (f"{v.label} changed {v.changed_tensors} norm tensors. No weight quantizer touches norms (llama.cpp "
                "keeps every 1-D tensor in F32; GPTQ, AWQ and quanto quantize only Linear layers), so all of this "
                "error is the accuracy lost to clipping, and it buys nothing for quantization")
        if schemes:
            worse = [s for s in schemes if v.kl.mean > s.kl.mean]
            listed = ", ".join(f"{s.label} {s.kl.mean:.3g}" for s in schemes)
            what += (f"; its mean KL ({v.kl.mean:.3g}) is larger than that of every quantization variant here "
                     f"({listed})" if len(worse) == len(schemes) else
                     f"; its mean KL ({v.kl.mean:.3g}) is larger than that of {len(worse)} of the {len(schemes)} "
                     f"quantization variants ({listed})")
        notes.append(what)
    if profile is not None:
        notes += _activation_notes(profile)
    if sensitivity:
        top = sensitivity[:3]
        notes.append("most sensitive groups: " + ", ".join(f"{g.group} (mean KL {g.kl.mean:.3g})" for g in top))
    return tuple(notes)


def _activation_notes(p: ActivationProfile) -> list[str]:
    notes = []
    fp16 = p.thresholds.get("fp16_max", 65504.0)
    if p.fp16_overflow:
        worst = p.fp16_overflow[0]
        layer = next((la for la in p.layers if la.module == worst.module), None)
        where = f" (channel {layer.max_channel}, token {layer.max_token_text!r})" if layer is not None else ""
        n_values = sum(s.count for s in p.fp16_overflow)
        notes.append(f"{n_values} activation values in {len(p.fp16_overflow)} modules exceed the fp16 range "
                     f"(±{fp16:g}); the largest, {worst.max_abs:.4g} in {worst.module}{where}, would be inf in "
                     "float16: run this model in bfloat16 or float32, not float16")
    elif p.largest is not None:
        notes.append(f"every activation stays within the fp16 range (largest {p.largest.max_abs:.4g} in "
                     f"{p.largest.module})")
    channels: dict[int, list[tuple[int, int, tuple[str, ...]]]] = {}
    for layer in p.layers:
        for m in layer.massive:
            channels.setdefault(m.channel, []).append((layer.layer, m.tokens, m.token_texts))
    for c, seen in sorted(channels.items(), key=lambda kv: -len(kv[1]))[:3]:
        layers = [s[0] for s in seen]
        most = max(s[1] for s in seen)
        tokens = sorted({t for s in seen for t in s[2]})
        span = f"layers {min(layers)}–{max(layers)}" if len(layers) > 1 else f"layer {layers[0]}"
        abs_, ratio = p.thresholds.get("massive_abs", 100.0), p.thresholds.get("massive_ratio", 1000.0)
        examples = ", ".join(repr(t) for t in tokens[:4])
        notes.append(f"massive activations (Sun et al. 2024: |h| > {abs_:g} and > {ratio:g} × the median) in "
                     f"residual channel {c}, {span}, at up to {most} of the tokens (e.g. {examples}); they are part "
                     "of how the model computes, like Gemma's large norm gains, and what a norm or weight clip cuts")
    confirmed = [s for s in p.super_weights if s.confirmed]
    if p.super_weights:
        notes.append(f"{len(confirmed)} of {len(p.super_weights)} data-free super-weight candidates confirmed by the "
                     "down_proj activations" + (": " + ", ".join(f"{s.tensor}[{s.row}, {s.col}]" for s in confirmed[:5])
                                                 if confirmed else ""))
    return notes
