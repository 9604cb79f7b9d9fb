"""The forward report as HTML sections: variants against the base (KL bars), the activation profile
(residual stream per layer, super-weight checks, fp16 range), the sensitivity ranking and the notes.
Tables are those of `report.forward`, so the terminal, Markdown and HTML never disagree."""

from __future__ import annotations

from ...results import ForwardResult
from .. import plots
from ..forward import activation_tables, forward_header, variants_table
from ..fmt import num
from ..tables import Table
from .page import Figure, Note, Notes, Section, Text
from .registry import register_sections

__all__ = ["forward_sections"]

BARS = 30

KL_TEXT = ("Each variant runs on the same tokens as the base. KL is KL(P_base ‖ P_variant) of the next-token "
           "distributions, per token, in nats (natural log), as llama.cpp's llama-perplexity --kl-divergence; top-1 "
           "agreement is the share of tokens whose most likely next token is unchanged; RMS Δp is the root mean "
           "square change of the probability of the right next token. Scheme variants are fake-quantized in memory "
           "with normscope's own kernels (the values simulate measures); under the llama.cpp runtime (the default for "
           "llama.cpp schemes) each quantized matmul's input is also quantized as ggml-cpu's dot product does "
           "(Q8_0, Q8_1 or Q8_K blocks), and KL weights is the KL of the quantized weights alone. Clip variants clip "
           "norm gains in their convention.")


def _kl_figure(r: ForwardResult) -> Figure | None:
    vs = [v for v in r.variants if v.kl is not None and v.kl.mean > 0]
    if not vs:
        return None
    labels = [v.label for v in vs]
    series = {"KL mean": [v.kl.mean for v in vs], "KL p99": [v.kl.p99 for v in vs]}
    if any(v.weights_kl is not None for v in vs):
        series["KL weights"] = [v.weights_kl.mean if v.weights_kl is not None else v.kl.mean for v in vs]
    data = Table("KL per variant (nats)", ("variant", "KL mean", "KL weights", "KL p99"),
                 tuple((v.label, num(v.kl.mean, 4), num(v.weights_kl.mean, 4) if v.weights_kl else "—",
                        num(v.kl.p99, 4)) for v in vs), "lrrr")
    svg = plots.bars(labels, series, xlabel="KL(P_base ‖ P_variant), nats per token (log scale)", log=True,
                     fmt=lambda x: f"{x:.3g}")
    return Figure(svg, "Mean and 99th-percentile KL of each variant against the base.", data)


def _tradeoff_figure(r: ForwardResult) -> Figure | None:
    """Bits per weight against mean KL of the scheme variants; the ones no other beats (no larger and no further
    from the base) joined."""
    vs = [v for v in r.variants if v.kl is not None and v.bits_per_weight is not None and v.kl.mean > 0]
    if len(vs) < 2:
        return None
    front = [v.label for v in sorted(vs, key=lambda v: (v.bits_per_weight, v.kl.mean)) if not any(
        o is not v and o.bits_per_weight <= v.bits_per_weight and o.kl.mean <= v.kl.mean
        and (o.bits_per_weight, o.kl.mean) != (v.bits_per_weight, v.kl.mean) for o in vs)]
    data = Table("Size against KL", ("variant", "bpw", "KL mean", "best at its size"),
                 tuple((v.label, num(v.bits_per_weight, 4), num(v.kl.mean, 4), "yes" if v.label in front else "no")
                       for v in vs), "lrrl")
    svg = plots.tradeoff({v.label: (v.bits_per_weight, v.kl.mean) for v in vs}, front, log=True,
                         xlabel="bits per weight over the whole model (smaller is better)",
                         ylabel="mean KL, nats per token (log scale; lower is better)")
    return Figure(svg, "Each scheme variant's size against its mean KL from the base; filled points joined by the "
                       "dashed line are the variants no other beats (no larger and no further from the base).", data)


def _depth_figure(r: ForwardResult) -> Figure | None:
    p = r.activations
    if p is None or not p.layers:
        return None
    layers = [la.layer for la in p.layers]
    series = {"max |h|": [la.max_abs for la in p.layers], "median |h|": [la.median_abs for la in p.layers]}
    data = Table("Residual stream per layer", ("layer", "max |h|", "median |h|"),
                 tuple((str(la.layer), num(la.max_abs), num(la.median_abs, 4)) for la in p.layers), "rrr")
    limit = p.thresholds.get("fp16_max", 65504.0)
    # the float16 limit, drawn once the activations come within a factor of 10 of it
    near = max((la.max_abs for la in p.layers), default=0.0) >= limit / 10
    svg = plots.curves(layers, series, xlabel="layer", ylabel="|h| (log scale)", log=True, integer_x=True,
                       levels={f"fp16 max ±{num(limit)}": limit} if near else None)
    fp16 = num(limit)
    return Figure(svg, f"Largest and median |activation| of each decoder layer's output on the base pass; values "
                       f"above {fp16} cannot be held in float16.", data)


@register_sections(ForwardResult)
def forward_sections(r: ForwardResult, top: int | None = None) -> list[Section]:
    """Sections of a forward report; `top` limits the ranked tables (None: every row)."""
    n = top if top is not None else 10 ** 6
    blocks: list = [Text(" · ".join(forward_header(r))), Text(KL_TEXT), variants_table(r)]
    blocks += [fig for fig in (_kl_figure(r), _tradeoff_figure(r)) if fig is not None]
    sections = [Section("Forward check", tuple(blocks), id="forward")]
    if r.activations is not None:
        ablocks: list = []
        depth = _depth_figure(r)
        if depth is not None:
            ablocks.append(depth)
        ablocks += activation_tables(r.activations, n)
        sections.append(Section("Activations", tuple(ablocks), id="activations"))
    if r.sensitivity:
        groups = r.sensitivity[:BARS]
        table = Table(f"Sensitivity: one group quantized with {r.sensitivity_scheme} at a time",
                      ("group", "types", "KL mean", "KL weights", "KL p99", "top-1 agree"),
                      tuple((g.group, ", ".join(g.types), num(g.kl.mean, 4),
                             num(g.weights_kl.mean, 4) if g.weights_kl else "—", num(g.kl.p99, 4),
                             f"{100 * g.top1_agreement:.1f}%") for g in r.sensitivity[:n]), "llrrrr")
        svg = plots.bars([g.group for g in groups], {"KL mean": [g.kl.mean for g in groups]},
                         xlabel="mean KL, nats per token", fmt=lambda x: f"{x:.3g}")
        sections.append(Section("Sensitivity", (Figure(svg, f"The {len(groups)} groups whose quantization alone "
                                                            "moves the outputs most.", table),), id="sensitivity"))
    notes = [Note("warning", w) for w in r.warnings] + [Note("info", t) for t in r.notes]
    notes += [Note("info", t, v.label) for v in r.variants for t in v.notes]
    if notes:
        sections.append(Section("What to read", (Notes("Notes", tuple(notes)),), id="forward-notes"))
    return sections
