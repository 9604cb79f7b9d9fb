"""forward results as tables (terminal and Markdown share them) and the notes of the analysis."""

from __future__ import annotations

from ..results import ActivationProfile, ForwardResult, ForwardVariant
from .fmt import count, num, size
from .markdown import md_report
from .tables import Table
from .terminal import render_tables
from .text import register_text, register_verdict

__all__ = ["forward_header", "forward_tables", "activation_tables", "forward_terminal", "forward_markdown",
           "forward_verdict"]


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100.0 * x:.1f}%"


def _kl(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"


def forward_header(r: ForwardResult) -> list[str]:
    t = r.text
    return [f"source: {r.source.spec or r.source.path} ({r.source.format})",
            f"architecture: {r.architecture} · {count(t.n_tokens)} tokens scored in {t.n_windows} window(s) of ≤ "
            f"{t.window} ({'BOS first' if t.bos else 'no BOS'}) · text: {t.source}",
            "KL(P_base ‖ P_variant) per token in nats (natural log), as llama-perplexity --kl-divergence",
            _runtime_line(r)]


def _runtime_line(r: ForwardResult) -> str:
    """Which runtime the KLs are under (the default: llama.cpp's for llama.cpp schemes)."""
    runtimes = {v.runtime for v in r.variants if v.kind == "scheme"} | {g.runtime for g in r.sensitivity}
    if "llama.cpp" in runtimes:
        return ("runtime: llama.cpp (each quantized matmul's input quantized as ggml-cpu does: Q8_0, Q8_1 or Q8_K "
                "blocks); KL weights: the quantized weights with float32 inputs")
    return "runtime: weights (quantized weights, float32 inputs" + (
        "; --runtime llama.cpp models llama.cpp's quantized matmul inputs)" if r.options.get("runtime") == "weights"
        else ")")


def _variant_row(v: ForwardVariant) -> tuple[str, ...]:
    kl = v.kl
    return (v.label, v.kind, size(v.nbytes) if v.nbytes is not None else "—",
            num(v.bits_per_weight, 4) if v.bits_per_weight is not None else "—", f"{v.perplexity:.4g}",
            _kl(kl.mean if kl else None), _kl(v.weights_kl.mean if v.weights_kl else None),
            _kl(kl.p99 if kl else None), _kl(kl.max if kl else None), _pct(v.top1_agreement), _pct(v.rms_dp))


def variants_table(r: ForwardResult) -> Table:
    return Table("Variants against the base on the same tokens",
                 ("variant", "kind", "size", "bpw", "PPL", "KL mean", "KL weights", "KL p99", "KL max", "top-1 agree",
                  "RMS Δp"),
                 tuple(_variant_row(v) for v in (r.base, *r.variants)), "llrrrrrrrrr")


def activation_tables(p: ActivationProfile, top: int = 10) -> list[Table]:
    """Per layer: the residual stream's largest |h|, its massive channels, the down_proj spikes; then the
    super-weight checks and the modules beyond the fp16 range."""
    rows = []
    for la in p.layers:
        massive = ", ".join(f"{m.channel}×{m.tokens}" for m in la.massive[:3])
        massive += " …" if len(la.massive) > 3 else ""
        rows.append((str(la.layer), num(la.max_abs), str(la.max_channel), repr(la.max_token_text),
                     num(la.median_abs, 3), massive or "—",
                     "—" if la.down_in_max_abs is None else f"{num(la.down_in_max_abs)} @{la.down_in_channel}",
                     "—" if la.down_out_max_abs is None else f"{num(la.down_out_max_abs)} @{la.down_out_channel}"))
    tables = [Table("Residual stream and down_proj per layer (base pass)",
                    ("layer", "max |h|", "channel", "token", "median |h|", "massive channel×tokens",
                     "down_proj in max", "down_proj out max"), tuple(rows), "rrrlrlrr")]
    checks = sorted(p.super_weights, key=lambda s: (not s.confirmed, -s.input_ratio))[:top]
    tables.append(Table(f"Super-weight candidates against the activations (top {len(checks)} of "
                        f"{len(p.super_weights)})",
                        ("tensor", "row, col", "z", "token", "input |x|", "× median", "in rank", "out rank",
                         "share", "confirmed"),
                        tuple((s.tensor, f"{s.row}, {s.col}", num(s.z, 3), repr(s.token_text), num(s.input_abs, 4),
                               f"{s.input_ratio:.0f}", str(s.input_rank), str(s.output_rank), f"{s.share:.2f}",
                               "yes" if s.confirmed else "no") for s in checks), "lrrlrrrrrl"))
    over = p.fp16_overflow[:top]
    tables.append(Table(f"Beyond the fp16 range ±{num(p.thresholds.get('fp16_max', 65504.0))} "
                        f"(top {len(over)} of {len(p.fp16_overflow)} modules)",
                        ("module", "max |x|", "values beyond", "values seen"),
                        tuple((o.module, num(o.max_abs), count(o.count), count(o.values)) for o in over), "lrrr"))
    return tables


def _pm(value: float, unc: float, scale: float = 1.0, digits: int = 6, unit: str = "") -> str:
    return f"{scale * value:.{digits}f} ± {scale * unc:.{digits}f}{unit}"


def kld_file_table(r: ForwardResult) -> Table | None:
    """llama-perplexity --kl-divergence's closing statistics of each variant against the --kld-base file."""
    rows = []
    for v in (r.base, *r.variants):
        k = v.kld_file
        if not k:
            continue
        rows.append((v.label, _pm(k["kld_mean"], k["kld_mean_unc"]), f"{k['kld_median']:.6f}", f"{k['kld_p99']:.6f}",
                     f"{k['kld_max']:.6f}", _pm(k["same_top"], k["same_top_unc"], 100, 3, " %"),
                     _pm(k["dp_rms"], k["dp_rms_unc"], 100, 3, " %"), f"{int(k['count'])}"))
    if not rows:
        return None
    return Table(f"llama-perplexity --kl-divergence statistics against {r.options.get('kld_base')}",
                 ("variant", "Mean KLD", "Median KLD", "99.0% KLD", "Maximum KLD", "Same top p", "RMS Δp", "tokens"),
                 tuple(rows), "lrrrrrrr")


def forward_tables(r: ForwardResult, top: int = 10) -> list[Table]:
    tables = [variants_table(r)]
    kld = kld_file_table(r)
    if kld is not None:
        tables.append(kld)
    if r.activations is not None:
        tables += activation_tables(r.activations, top)
    if r.sensitivity:
        sens = r.sensitivity[:top]
        tables.append(Table(f"Sensitivity: one group quantized with {r.sensitivity_scheme} at a time (top {len(sens)} "
                            f"of {len(r.sensitivity)} by mean KL)",
                            ("group", "types", "parameters", "KL mean", "KL weights", "KL p99", "KL max",
                             "top-1 agree"),
                            tuple((g.group, ", ".join(g.types), count(g.params), _kl(g.kl.mean),
                                   _kl(g.weights_kl.mean if g.weights_kl else None), _kl(g.kl.p99), _kl(g.kl.max),
                                   _pct(g.top1_agreement)) for g in sens), "llrrrrrr"))
    return tables


def _notes(r: ForwardResult) -> list[tuple[str, str]]:
    notes = [("warning", w) for w in r.warnings] + [("info", n) for n in r.notes]
    for v in r.variants:
        notes += [("info", f"{v.label}: {n}") for n in v.notes]
    return notes


def _variant_fact(v: ForwardVariant) -> str:
    return (f"{v.label} (KL {_kl(v.kl.mean)} nats per token, top-1 {_pct(v.top1_agreement)}, perplexity "
            f"{num(v.perplexity, 4)})")


def forward_verdict(r: ForwardResult) -> list[str]:
    """fp16 overflow first (a warning), then the variants closest to and furthest from the base by mean KL, then
    the group whose quantization alone moves the outputs most.

    Example:
        >>> forward_verdict(normscope.forward("gemma-3-270m-hf", schemes="Q4_K_M,Q2_K"))[1]  # doctest: +SKIP
        'closest to the base: Q4_K_M (KL 9.351e-05 nats per token, ...); furthest: Q2_K (...)'
    """
    lines = []
    p = r.activations
    if p is not None and p.fp16_overflow:
        top = p.fp16_overflow[0]
        limit = num(p.thresholds.get("fp16_max", 65504.0))
        lines.append(f"WARNING fp16 overflow: {len(p.fp16_overflow)} modules exceed ±{limit} on the base pass "
                     f"(largest {num(top.max_abs)} in {top.module}): run this model in bf16 or fp32, not fp16")
    ranked = sorted((v for v in r.variants if v.kl is not None), key=lambda v: v.kl.mean)
    if len(ranked) == 1:
        lines.append(f"against the base ({num(r.base.perplexity, 4)} perplexity): {_variant_fact(ranked[0])}")
    elif ranked:
        lines.append(f"closest to the base: {_variant_fact(ranked[0])}; furthest: {_variant_fact(ranked[-1])}; "
                     f"base perplexity {num(r.base.perplexity, 4)}")
    if r.sensitivity:
        g = r.sensitivity[0]
        lines.append(f"most sensitive under {r.sensitivity_scheme}: {g.group} alone moves the outputs by KL "
                     f"{_kl(g.kl.mean)} nats per token (top-1 {_pct(g.top1_agreement)}): keep it at more bits first")
    return lines[:3]


def forward_terminal(r: ForwardResult, top: int = 10, width: int = 120, color: bool = False) -> str:
    """The forward summary as shown by `normscope forward`, its verdict first."""
    return render_tables(forward_header(r), forward_tables(r, top), _notes(r), width, color,
                         verdict=forward_verdict(r))


def forward_markdown(r: ForwardResult, top: int = 10) -> str:
    """The forward report as GitHub-flavoured Markdown (verdict, tables, every note)."""
    return md_report("normscope forward", forward_header(r), forward_tables(r, top), _notes(r),
                     verdict=forward_verdict(r))


register_text(ForwardResult, terminal=forward_terminal, markdown=forward_markdown)
register_verdict(ForwardResult, forward_verdict)
