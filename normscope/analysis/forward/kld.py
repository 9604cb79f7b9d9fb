"""llama-perplexity's KL-divergence files and statistics (tools/perplexity/perplexity.cpp of llama.cpp).

`llama-perplexity --kl-divergence-base FILE` writes the base model's log-probabilities; `--kl-divergence
--kl-divergence-base FILE` scores another model against them. The file (native little-endian):

    "_logits_" | int32 n_ctx | int32 n_vocab | int32 n_chunk | int32 tokens[n_chunk * n_ctx]
    then per chunk, for each of its scored positions (n_ctx/2 … n_ctx-2, the second half), one row of
    nv = 2 * ((n_vocab + 1) / 2) + 4 uint16: float32 scale and float32 min_log_prob in the first 4, then
    round((logit - min_logit) / scale) per token (0 below min_logit = max(min logit, max logit - 16)),
    scale = (max_logit - min_logit) / 65535, so log P(v) = scale * q[v] + min_log_prob.

The tokens are the text's (BOS first when the vocabulary adds one) cut into n_chunk = len // n_ctx chunks;
each chunk runs with its first token replaced by BOS. Statistics are llama.cpp's: means with the
uncertainty sqrt(var / (n - 1)), percentiles by its linear interpolation, KL over base tokens with
log P > -16, Δp = Q(next) − P(next).
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import ConfigError

__all__ = ["MAGIC", "KLDBase", "KLDScores", "encode_log_probs", "kld_chunks", "kld_statistics", "read_kld_base",
           "row_width", "score_chunk", "write_kld_base"]

MAGIC = b"_logits_"


def row_width(n_vocab: int) -> int:
    """uint16 per scored position: the vocabulary rounded up to even, plus the two float32 in front."""
    return 2 * ((n_vocab + 1) // 2) + 4


def kld_chunks(ids: Sequence[int], n_ctx: int, bos: int | None) -> tuple[list[int], list[list[int]]]:
    """(tokens the file stores, the chunks run): `ids` with BOS in front when the vocabulary adds one, cut into
    len // n_ctx chunks of n_ctx, each run with its first token replaced by BOS (llama-perplexity's rule).

    Raises:
        ConfigError: fewer than 2 * n_ctx tokens (llama-perplexity refuses them too).
    """
    tokens = ([bos] if bos is not None else []) + list(ids)
    if n_ctx < 4:
        raise ConfigError(f"--ctx {n_ctx}: a KL-divergence chunk needs at least 4 tokens")
    if len(tokens) < 2 * n_ctx:
        raise ConfigError(f"the text has {len(tokens)} tokens; llama-perplexity's KL-divergence needs at least "
                          f"2 × --ctx = {2 * n_ctx}")
    n_chunk = len(tokens) // n_ctx
    tokens = tokens[:n_chunk * n_ctx]
    chunks = [list(tokens[i * n_ctx:(i + 1) * n_ctx]) for i in range(n_chunk)]
    if bos is not None:
        for c in chunks:
            c[0] = bos
    return tokens, chunks


def _nearest_int(v: np.ndarray) -> np.ndarray:
    """ggml's nearest_int: (v + 1.5 * 2**23) in float32, its low mantissa bits (round half to even)."""
    return ((v.astype(np.float32) + np.float32(12582912.0)).view(np.int32) & 0x007FFFFF) - 0x00400000


def encode_log_probs(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(uint16 rows of the file, the NLL of nothing: max_logit + log_sum_exp per row) for float32 logits
    (rows, n_vocab), with llama.cpp's float32 arithmetic (log_softmax of perplexity.cpp)."""
    x = np.ascontiguousarray(logits, dtype=np.float32)
    rows, n_vocab = x.shape
    out = np.zeros((rows, row_width(n_vocab)), np.uint16)
    lse_all = np.zeros(rows, np.float64)
    for r in range(rows):
        v = x[r]
        max_logit = v.max()
        min_logit = max(v.min(), np.float32(max_logit - np.float32(16)))
        sum_exp = float(np.exp(v - max_logit, dtype=np.float32).astype(np.float64).sum())
        log_sum_exp = np.float32(math.log(sum_exp))
        min_log_prob = np.float32(np.float32(min_logit - max_logit) - log_sum_exp)
        scale = np.float32(np.float32(max_logit - min_logit) / np.float32(65535.0))
        out[r, :4] = np.array([scale, min_log_prob], np.float32).view(np.uint16)
        if scale:
            inv = np.float32(1.0) / scale
            q = _nearest_int(inv * (v - min_logit))
            out[r, 4:4 + n_vocab] = np.where(v > min_logit, q, 0).astype(np.uint16)
        lse_all[r] = float(max_logit) + float(log_sum_exp)
    return out, lse_all


def decode_log_probs(rows: np.ndarray, n_vocab: int) -> np.ndarray:
    """float32 log P(v) of the file's rows: scale * q + min_log_prob."""
    head = np.ascontiguousarray(rows[:, :4]).view(np.float32)
    return head[:, :1] * rows[:, 4:4 + n_vocab].astype(np.float32) + head[:, 1:2]


@dataclass(frozen=True)
class KLDBase:
    """A base file's header: the context, vocabulary, chunk count and tokens; `offset` where the rows start."""

    path: Path
    n_ctx: int
    n_vocab: int
    n_chunk: int
    tokens: np.ndarray  # int32 (n_chunk * n_ctx,)
    offset: int

    @property
    def first(self) -> int:
        return self.n_ctx // 2

    @property
    def scored(self) -> int:
        """Scored positions per chunk."""
        return self.n_ctx - 1 - self.first

    def chunks(self, bos: int | None) -> list[list[int]]:
        out = [self.tokens[i * self.n_ctx:(i + 1) * self.n_ctx].tolist() for i in range(self.n_chunk)]
        if bos is not None:
            for c in out:
                c[0] = bos
        return out

    def rows(self) -> Iterator[np.ndarray]:
        """Each chunk's uint16 rows (scored, nv), one chunk in memory at a time."""
        nv = row_width(self.n_vocab)
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            for i in range(self.n_chunk):
                raw = f.read(self.scored * nv * 2)
                if len(raw) != self.scored * nv * 2:
                    raise ConfigError(f"{self.path}: truncated: chunk {i + 1} of {self.n_chunk} is incomplete")
                yield np.frombuffer(raw, "<u2").reshape(self.scored, nv)


def read_kld_base(path: str | Path) -> KLDBase:
    """The header of a llama-perplexity KL-divergence base file.

    Raises:
        ConfigError: no such file, a wrong magic, a header or size that does not add up.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{p}: no such file (--kld-base takes a file llama-perplexity --kl-divergence-base wrote)")
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(20)
        if len(head) < 20 or head[:8] != MAGIC:
            raise ConfigError(f"{p}: not a llama-perplexity KL-divergence base file (it starts with {head[:8]!r}, "
                              f"not {MAGIC!r})")
        n_ctx, n_vocab, n_chunk = struct.unpack("<iii", head[8:])
        if n_ctx < 4 or n_vocab < 1 or n_chunk < 1:
            raise ConfigError(f"{p}: header says n_ctx {n_ctx}, n_vocab {n_vocab}, n_chunk {n_chunk}")
        raw = f.read(4 * n_ctx * n_chunk)
        tokens = np.frombuffer(raw[:len(raw) // 4 * 4], "<i4")
    scored = n_ctx - 1 - n_ctx // 2
    want = 20 + 4 * n_ctx * n_chunk + n_chunk * scored * row_width(n_vocab) * 2
    if tokens.size != n_ctx * n_chunk or size != want:
        raise ConfigError(f"{p}: {size} bytes, but its header (n_ctx {n_ctx}, n_vocab {n_vocab}, n_chunk {n_chunk}) "
                          f"makes {want}")
    return KLDBase(p, n_ctx, n_vocab, n_chunk, tokens.copy(), 20 + 4 * n_ctx * n_chunk)


def write_kld_base(out: io.BufferedIOBase, tokens: Sequence[int], n_ctx: int, n_vocab: int,
                   chunk_logits: Iterator[np.ndarray]) -> None:
    """Write a base file: the header and tokens, then each chunk's scored rows from its float32 logits of the
    scored positions (n_ctx/2 … n_ctx-2: (scored, n_vocab))."""
    n_chunk = len(tokens) // n_ctx
    out.write(MAGIC + struct.pack("<iii", n_ctx, n_vocab, n_chunk))
    out.write(np.asarray(tokens, "<i4").tobytes())
    for logits in chunk_logits:
        rows, _ = encode_log_probs(logits)
        out.write(rows.astype("<u2").tobytes())


@dataclass
class KLDScores:
    """Per scored position: KL, Δp, NLL of the variant and of the base, same top token."""

    kld: list[np.ndarray]
    p_diff: list[np.ndarray]
    nll: list[np.ndarray]
    nll_base: list[np.ndarray]
    same_top: list[np.ndarray]

    @classmethod
    def empty(cls) -> KLDScores:
        return cls([], [], [], [], [])

    def cat(self, name: str) -> np.ndarray:
        parts = getattr(self, name)
        return np.concatenate(parts) if parts else np.zeros(0)


def score_chunk(base_rows: np.ndarray, logits: np.ndarray, next_tokens: Sequence[int], n_vocab: int,
                scores: KLDScores) -> None:
    """One chunk against the base file's rows, as llama.cpp's kl_divergence computes it (float32 log-softmax of
    the variant, float32 base log-probs from the file, KL summed in float64 over base log P > -16)."""
    x = np.ascontiguousarray(logits, dtype=np.float32)
    head = np.ascontiguousarray(base_rows[:, :4]).view(np.float32)
    for r in range(x.shape[0]):
        v = x[r]
        imax = int(v.argmax())
        max_logit = v[imax]
        sum_exp = float(np.exp(v - max_logit, dtype=np.float32).astype(np.float64).sum())
        log_sum_exp = np.float32(math.log(sum_exp))
        scale, min_log_prob = head[r, 0], head[r, 1]
        q = base_rows[r, 4:4 + n_vocab]
        tok = int(next_tokens[r])
        nll = np.float32(np.float32(max_logit + log_sum_exp) - v[tok])
        nll_base = -np.float32(scale * np.float32(q[tok]) + min_log_prob)
        lmax = np.float32(max_logit + log_sum_exp)
        p_log_base = scale * q.astype(np.float32) + min_log_prob
        keep = p_log_base > np.float32(-16.0)
        pb = np.exp(p_log_base[keep], dtype=np.float32)
        kld = float(np.sum((pb * (p_log_base[keep] - v[keep] + lmax)).astype(np.float64)))
        scores.kld.append(np.array([kld]))
        scores.same_top.append(np.array([imax == int(p_log_base.argmax())]))
        p_diff = np.float32(np.exp(-nll, dtype=np.float32) - np.exp(-nll_base, dtype=np.float32))
        scores.p_diff.append(np.array([p_diff], np.float64))
        scores.nll.append(np.array([nll], np.float64))
        scores.nll_base.append(np.array([nll_base], np.float64))


def _mean_unc(values: np.ndarray) -> tuple[float, float]:
    n = values.size
    if n < 1:
        return 0.0, 0.0
    f = float(values.sum()) / n
    df = float((values * values).sum()) / n - f * f
    return f, math.sqrt(df / (n - 1)) if df > 0 and n > 10 else 0.0


def _percentile(sorted_values: np.ndarray, fraction: float) -> float:
    """llama.cpp's percentile lambda, in float32 as it computes it."""
    if fraction <= 0:
        return float(sorted_values[0])
    if fraction >= 1:
        return float(sorted_values[-1])
    p = np.float32(np.float32(fraction) * np.float32(sorted_values.size - 1))
    ip = int(p)
    p = np.float32(p - np.float32(ip))
    hi = sorted_values[min(ip + 1, sorted_values.size - 1)]
    return float(np.float32((np.float32(1) - p) * sorted_values[ip] + p * hi))


def _median(sorted_values: np.ndarray) -> float:
    n = sorted_values.size
    if n % 2 == 0:
        return float(np.float32(0.5) * np.float32(sorted_values[n // 2] + sorted_values[n // 2 - 1]))
    return float(sorted_values[n // 2])


KLD_FRACTIONS = (0.999, 0.990, 0.950, 0.900, 0.100, 0.050, 0.010, 0.001)
DP_FRACTIONS = (0.999, 0.990, 0.950, 0.900, 0.750, 0.250, 0.100, 0.050, 0.010, 0.001)


def kld_statistics(scores: KLDScores) -> dict[str, float]:
    """llama-perplexity's closing statistics block (`====== KL divergence statistics ======` and the token
    probability block) as numbers: mean KLD ± its uncertainty, its percentiles, same top p ± uncertainty, Δp."""
    kld = np.sort(scores.cat("kld").astype(np.float32))
    dp = np.sort(scores.cat("p_diff").astype(np.float32))
    nll, nll_base = scores.cat("nll"), scores.cat("nll_base")
    n = kld.size
    out: dict[str, float] = {"count": float(n)}
    out["ppl"], out["ppl_base"] = math.exp(_mean_unc(nll)[0]), math.exp(_mean_unc(nll_base)[0])
    out["kld_mean"], out["kld_mean_unc"] = _mean_unc(scores.cat("kld"))
    out["kld_max"], out["kld_min"], out["kld_median"] = float(kld[-1]), float(kld[0]), _median(kld)
    for f in KLD_FRACTIONS:
        out[f"kld_p{100 * f:g}"] = _percentile(kld, f)
    out["dp_mean"], out["dp_mean_unc"] = _mean_unc(scores.cat("p_diff"))
    out["dp_max"], out["dp_min"], out["dp_median"] = float(dp[-1]), float(dp[0]), _median(dp)
    for f in DP_FRACTIONS:
        out[f"dp_p{100 * f:g}"] = _percentile(dp, f)
    p2 = scores.cat("p_diff") ** 2
    mse, mse_unc = _mean_unc(p2)
    out["dp_rms"] = math.sqrt(mse)
    out["dp_rms_unc"] = 0.5 / out["dp_rms"] * mse_unc if out["dp_rms"] else 0.0
    same = float(scores.cat("same_top").sum()) / n if n else 0.0
    out["same_top"] = same
    out["same_top_unc"] = math.sqrt(same * (1 - same) / (n - 1)) if n > 1 else 0.0
    return out


# -- the model side (torch, imported by the caller) --------------------------------------------------------

def _chunk_logits(torch, model, chunk: Sequence[int], first: int) -> np.ndarray:
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([list(chunk)]), use_cache=False).logits[0, first:len(chunk) - 1]
    return out.float().numpy()


def write_model_kld_base(torch, model, path: str | Path, tokens: Sequence[int], chunks: Sequence[Sequence[int]],
                         n_ctx: int) -> int:
    """Write `model`'s base file for `chunks` (as llama-perplexity --kl-divergence-base does), one chunk's logits
    in memory at a time, atomically; returns the vocabulary size."""
    from ...io import atomic_writer

    first = n_ctx // 2
    vocab = _chunk_logits(torch, model, chunks[0], first).shape[1]
    with atomic_writer(path) as f:
        write_kld_base(f, tokens, n_ctx, vocab, (_chunk_logits(torch, model, c, first) for c in chunks))
    return vocab


def score_model_kld(torch, model, base: KLDBase, bos: int | None) -> dict[str, float]:
    """llama-perplexity --kl-divergence's statistics of `model` against a base file."""
    scores = KLDScores.empty()
    for chunk, rows in zip(base.chunks(bos), base.rows()):
        logits = _chunk_logits(torch, model, chunk, base.first)
        if logits.shape[1] != base.n_vocab:
            raise ConfigError(f"{base.path}: written for a vocabulary of {base.n_vocab} tokens; this model has "
                              f"{logits.shape[1]}")
        score_chunk(rows, logits, chunk[base.first + 1:], base.n_vocab, scores)
    return kld_statistics(scores)
