"""Integer codes out of packed words: the two bit layouts every integer pack uses.

* a *stream*: value i sits at bit i·bits of the little-endian concatenation of the words, so a
  value may straddle two words (GPTQ's 3-bit layout, compressed-tensors' `pack_to_int32`);
* *per word*: `32 // bits` values per word at bits k·bits, optionally permuted (AWQ's
  [0, 2, 4, 6, 1, 3, 5, 7], the old compressed-tensors layout for 3/5/6/7 bits).

For 2, 4 and 8 bits the two layouts are the same. Functions return uint8 codes; callers subtract
zero points and multiply by scales.
"""

from __future__ import annotations

import numpy as np

__all__ = ["unpack_stream", "unpack_per_word", "stream_words"]


def stream_words(n_values: int, bits: int) -> int:
    """int32 words a stream of `n_values` codes of `bits` bits occupies (the last one partly).

    Example:
        >>> stream_words(128, 3), stream_words(10, 4)
        (12, 2)
    """
    return -(-n_values * bits // 32)


def unpack_stream(words: np.ndarray, bits: int, count: int, *, axis: int = -1, bit0: int = 0) -> np.ndarray:
    """`count` codes of a bit stream of 32-bit words laid along `axis`, the first at bit `bit0`.

    Args:
        words: int32 or uint32 words; code k starts at bit bit0 + k·bits of the little-endian
            concatenation of the words.
        bits: 1..8.
        count: how many codes to return along `axis`.
        bit0: where the first wanted code starts, relative to words[0] (for a slab of words cut
            out of a longer stream: value index · bits − 32 · first word).

    Returns:
        uint8 array, `words`' shape with `axis` replaced by `count`.

    Raises:
        ValueError: the words do not hold that many values.

    Example:
        >>> unpack_stream(np.array([0x76543210], np.uint32), 4, 8).tolist()
        [0, 1, 2, 3, 4, 5, 6, 7]
    """
    w = np.moveaxis(np.asarray(words).view(np.uint32), axis, -1)
    if bit0 < 0 or bit0 + count * bits > w.shape[-1] * 32:
        raise ValueError(f"{w.shape[-1]} words do not hold {count} {bits}-bit values from bit {bit0}")
    mask = np.uint32((1 << bits) - 1)
    if 32 % bits == 0 and bit0 % bits == 0:  # no value straddles a word: one shift per field
        per, first = 32 // bits, bit0 // bits
        w0, w1 = first // per, -(-(first + count) // per)
        part = w[..., w0:w1]
        out = np.empty((*part.shape[:-1], part.shape[-1] * per), np.uint8)
        for k in range(per):
            out[..., k::per] = (part >> np.uint32(k * bits)) & mask
        out = out[..., first - w0 * per: first - w0 * per + count]
        return np.moveaxis(out, -1, axis)
    # straddling values (3, 5, 6, 7 bits): read each value from the 64-bit pair of its two words
    wide = np.concatenate([w, np.zeros((*w.shape[:-1], 1), np.uint32)], axis=-1).astype(np.uint64)
    pos = bit0 + np.arange(count, dtype=np.int64) * bits
    idx, shift = pos >> 5, (pos & 31).astype(np.uint64)
    pair = wide[..., idx] | (wide[..., idx + 1] << np.uint64(32))
    out = ((pair >> shift) & np.uint64(mask)).astype(np.uint8)
    return np.moveaxis(out, -1, axis)


def unpack_per_word(words: np.ndarray, bits: int, *, axis: int = -1, order: tuple[int, ...] | None = None
                    ) -> np.ndarray:
    """All codes of words holding `32 // bits` values each at bits k·bits.

    Args:
        words: int32 or uint32 words.
        bits: 1..8.
        axis: the axis the values were packed along.
        order: `order[k]` is the position (within the word's group of values) of the value in field
            k, as AWQ's packer writes it (ref: AutoAWQ awq/modules/linear/gemm.py `order_map`);
            None is the identity.

    Returns:
        uint8 array with `axis` multiplied by `32 // bits`.

    Example:
        >>> unpack_per_word(np.array([0x76543210], np.uint32), 4, order=(0, 2, 4, 6, 1, 3, 5, 7)).tolist()
        [0, 4, 1, 5, 2, 6, 3, 7]
    """
    w = np.moveaxis(np.asarray(words).view(np.uint32), axis, -1)
    per = 32 // bits
    order = order or tuple(range(per))
    mask = np.uint32((1 << bits) - 1)
    out = np.empty((*w.shape[:-1], w.shape[-1] * per), np.uint8)
    for k in range(per):
        out[..., order[k]::per] = (w >> np.uint32(k * bits)) & mask
    return np.moveaxis(out, -1, axis)
