"""analyze results as tables (terminal and Markdown share them), header lines and notes."""

from __future__ import annotations

from ..results import AnalyzeResult, Role, name_order
from .findings import analyze_verdict, grouped_explanations, plural
from .fmt import count, num, pct, size, visible
from .markdown import md_table, md_verdict
from .tables import Table
from .terminal import render_tables
from .text import register_text, register_verdict

__all__ = ["analyze_header", "analyze_tables", "analyze_terminal", "analyze_markdown", "embeddings_kind"]


def embeddings_kind(r: AnalyzeResult) -> str:
    """'tied', 'untied', or 'no output head' (an encoder such as BERT has nothing to tie)."""
    if r.summary.tied_embeddings:
        return "tied"
    return "untied" if any(t.role is Role.LM_HEAD for t in r.tensors) else "no output head"


def analyze_header(r: AnalyzeResult) -> list[str]:
    """The summary lines above the tables."""
    s = r.summary
    arch = f"{s.architecture} (from {s.architecture_source})"
    dtypes = ", ".join(f"{k} {pct(v, s.n_params)}" for k, v in s.params_by_dtype.items())
    lines = [
        f"source: {r.source.spec or r.source.path} ({r.source.format})",
        f"architecture: {arch} · {s.n_layers if s.n_layers is not None else '?'} layers · {count(s.n_params)} "
        f"parameters · {size(s.bytes_on_disk)} on disk · {embeddings_kind(r)}"
        f"{' embeddings' if embeddings_kind(r) != 'no output head' else ''}",
        f"dtypes: {dtypes}",
    ]
    bad = [t for t in r.tensors for st in (t.norm, t.weight) if st and (st.nan_count or st.inf_count)]
    if bad:
        lines.append(f"NON-FINITE VALUES in {len(bad)} tensors: the checkpoint is damaged")
    return lines


def analyze_tables(r: AnalyzeResult, top: int = 10) -> list[Table]:
    """Top norms by max |gain|, top weights by |w|max/σ, NaN/Inf tensors, parameters by role."""
    norms = sorted((t for t in r.tensors if t.norm), key=lambda t: (-t.norm.max_abs_gain, name_order(t.name)))
    norm_rows = tuple(
        (t.name, t.norm.convention.value, num(t.norm.stored_max), num(t.norm.gain_max), num(t.norm.gain_min),
         num(t.norm.gain_p99), str(t.norm.negative_gain_count))
        for t in norms[:top])
    weights = sorted((t for t in r.tensors if t.weight and t.weight.std == t.weight.std and t.weight.std > 0),
                     key=lambda t: (-t.weight.absmax_over_std, name_order(t.name)))
    weight_rows = tuple(
        (t.name, t.role.value, "×".join(map(str, t.shape)), t.dtype, num(t.weight.absmax), num(t.weight.std),
         num(t.weight.absmax_over_std, 3), num(t.weight.excess_kurtosis, 3), count(t.weight.outlier_count))
        for t in weights[:top])
    sigma = num(r.options.get("outlier_sigma", 6.0))
    tables = [
        Table(f"Norm gains in their convention (top {len(norm_rows)} of {len(norms)} by max |gain|)",
              ("tensor", "convention", "stored max", "gain max", "gain min", "|gain| p99", "neg"), norm_rows,
              "llrrrrr"),
        Table(f"Largest weights against their spread (top {len(weight_rows)} of {len(weights)} by |w|max/σ)",
              ("tensor", "role", "shape", "dtype", "|w| max", "σ", "max/σ", "kurtosis", f">{sigma}σ"),
              weight_rows, "lllrrrrrr"),
    ]
    bad = [(t.name, st.nan_count, st.inf_count) for t in r.tensors for st in (t.norm, t.weight)
           if st and (st.nan_count or st.inf_count)]
    if bad:
        tables.insert(0, Table("Tensors with NaN or Inf", ("tensor", "NaN", "Inf"),
                               tuple((n, count(a), count(b)) for n, a, b in bad), "lrr"))
    total = r.summary.n_params
    tables.append(Table("Parameters by role", ("role", "parameters", "share"),
                        tuple((k, count(v), pct(v, total)) for k, v in r.summary.params_by_role.items()), "lrr"))
    return tables


def analyze_terminal(r: AnalyzeResult, top: int = 10, width: int = 120, color: bool = False) -> str:
    """The analyze summary as shown by `normscope analyze`: the verdict first, the explanations grouped by kind."""
    notes = [("warning", w) for w in r.warnings] + grouped_explanations(r, top)
    return render_tables(analyze_header(r), analyze_tables(r, top), notes, width, color, verdict=analyze_verdict(r))


def analyze_markdown(r: AnalyzeResult, top: int = 10) -> str:
    """The analyze report as Markdown: verdict, summary, top tables, the explanations grouped by kind (every
    tensor's own reading is in the JSON)."""
    parts = ["## normscope analyze", ""] + md_verdict(analyze_verdict(r))
    parts += [f"- {visible(line)}" for line in analyze_header(r)]
    parts += [f"- **warning**: {visible(w)}" for w in r.warnings]
    parts.append("")
    parts += [md for t in analyze_tables(r, top) if (md := md_table(t))]
    if r.explanations:
        parts.append(f"### Explanations ({plural(len(r.explanations), 'tensor')})\n")
        parts += [f"- **{sev}**: {visible(text)}" for sev, text in grouped_explanations(r, top)]
    return "\n".join(parts).rstrip() + "\n"


register_text(AnalyzeResult, terminal=analyze_terminal, markdown=analyze_markdown)
register_verdict(AnalyzeResult, analyze_verdict)
