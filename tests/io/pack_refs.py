"""Upstream packers and dequantizers, ported for tests: the references normscope's pack readers are
compared with. Neither GPTQModel, auto-gptq nor AutoAWQ installs on a CPU-only machine without CUDA
builds or pinned old transformers, so their pure-torch/numpy code is copied here with as few changes
as possible (`self.register_buffer(n, v)` -> an attribute, the object's fields passed in). Each
function names the file and function it comes from.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import torch
import torch as t
from torch import nn


# --------------------------------------------------------------------------------------------------
# GPTQModel (github.com/ModelCloud/GPTQModel @ f4c327a), gptqmodel/nn_modules/qlinear/__init__.py
# --------------------------------------------------------------------------------------------------
def _gptqmodel_module(bits: int, group_size: int, in_features: int, out_features: int):
    """The fields `PackableQuantLinear` has after __init__ with pack_dtype=torch.int32 (ref:
    `PackedGroupedQuantLinear.__init__`, `_register_gptq_buffers`)."""
    self = SimpleNamespace(bits=bits, group_size=group_size if group_size != -1 else in_features,
                           in_features=in_features, out_features=out_features, pack_dtype=t.int32,
                           pack_dtype_bits=32, pack_np_dtype=np.int32, pack_np_math_dtype=np.uint32,
                           maxq=2 ** bits - 1, planar=False)
    self.pack_factor = self.pack_dtype_bits // self.bits
    self.g_idx = t.tensor([i // self.group_size for i in range(in_features)], dtype=t.int32)
    self.register_buffer = lambda name, value: setattr(self, name, value)
    return self


def gptqmodel_pack_original(linear: nn.Module, scales: t.Tensor, zeros: t.Tensor, g_idx: t.Tensor | None,
                            bits: int, group_size: int):
    """ref: `PackableQuantLinear.pack_original` (v2 zeros: stored as they are). Returns the module."""
    self = _gptqmodel_module(bits, group_size, linear.in_features, linear.out_features)
    # --- verbatim from here (THREADPOOLCTL context dropped) ---
    W = linear.weight.data
    self.register_buffer("g_idx", g_idx if g_idx is not None else self.g_idx )

    scales = scales.T.contiguous()
    zeros = zeros.T.contiguous()
    scale_zeros = zeros * scales

    self.register_buffer("scales", scales.to(dtype=t.float16))

    if linear.bias is not None:
        self.register_buffer("bias", linear.bias.to(dtype=t.float16))
    elif not hasattr(self, "bias"):
        self.bias = None

    int_weight = t.round((W + scale_zeros[self.g_idx].T) / scales[self.g_idx].T)
    int_weight.clamp_(0, self.maxq)
    int_weight = int_weight.to(t.int32).T.contiguous()
    int_weight = int_weight.numpy().astype(self.pack_np_math_dtype)

    qweight = np.zeros((math.ceil(int_weight.shape[0] * self.bits / self.pack_dtype_bits), int_weight.shape[1]),
                       dtype=self.pack_np_math_dtype)
    if self.bits in [2, 4, 8]:
        for row in range(qweight.shape[0]):
            for j in range(self.pack_factor):
                qweight[row] |= int_weight[row * self.pack_factor + j] << (self.bits * j)
    elif self.bits == 3 and not self.planar:
        i = 0
        row = 0
        while row < qweight.shape[0]:
            for j in range(i, i + 10):
                qweight[row] |= int_weight[j] << (3 * (j - i))
            i += 10
            qweight[row] |= int_weight[i] << 30
            row += 1
            qweight[row] |= (int_weight[i] >> 2) & 1
            i += 1
            for j in range(i, i + 10):
                qweight[row] |= int_weight[j] << (3 * (j - i) + 1)
            i += 10
            qweight[row] |= int_weight[i] << 31
            row += 1
            qweight[row] |= (int_weight[i] >> 1) & 0x3
            i += 1
            for j in range(i, i + 10):
                qweight[row] |= int_weight[j] << (3 * (j - i) + 2)
            i += 10
            row += 1
    else:
        raise NotImplementedError(f"Unsupported bits={self.bits}")

    self.register_buffer("qweight", t.from_numpy(qweight.astype(self.pack_np_dtype)))

    zeros = zeros.numpy().astype(self.pack_np_math_dtype)
    qzeros = np.zeros((zeros.shape[0], math.ceil(zeros.shape[1] * self.bits / self.pack_dtype_bits)), dtype=self.pack_np_math_dtype)
    if self.bits in [2, 4, 8]:
        for col in range(qzeros.shape[1]):
            for j in range(self.pack_factor):
                qzeros[:, col] |= zeros[:, col * self.pack_factor + j] << (self.bits * j)
    elif self.bits == 3 and not self.planar:
        i = 0
        col = 0
        while col < qzeros.shape[1]:
            for j in range(i, i + 10):
                qzeros[:, col] |= zeros[:, j] << (3 * (j - i))
            i += 10
            qzeros[:, col] |= zeros[:, i] << 30
            col += 1
            qzeros[:, col] |= (zeros[:, i] >> 2) & 1
            i += 1
            for j in range(i, i + 10):
                qzeros[:, col] |= zeros[:, j] << (3 * (j - i) + 1)
            i += 10
            qzeros[:, col] |= zeros[:, i] << 31
            col += 1
            qzeros[:, col] |= (zeros[:, i] >> 1) & 0x3
            i += 1
            for j in range(i, i + 10):
                qzeros[:, col] |= zeros[:, j] << (3 * (j - i) + 2)
            i += 10
            col += 1
    else:
        raise NotImplementedError(f"Unsupported bits={self.bits}")

    self.register_buffer("qzeros", t.from_numpy(qzeros.astype(self.pack_np_dtype)))
    return self


def gptqmodel_v2_to_v1(qzeros: t.Tensor, bits: int) -> t.Tensor:
    """ref: gptqmodel/utils/model.py `convert_gptq_v2_to_v1_format_module` (int32 words), and for 3 bits
    gptqmodel/utils/model_dequant.py `_revert_gptq_v1_qzeros_correction` (per-field -1)."""
    qzeros = qzeros.clone()
    if bits == 2:
        qzeros -= 0b01010101010101010101010101010101
    elif bits == 3:
        qzeros.copy_(_shift_gptq_qzeros(qzeros, bits, delta=-1))
    elif bits == 4:
        qzeros -= 0b00010001000100010001000100010001
    elif bits == 8:
        qzeros -= 0b00000001000000010000000100000001
    return qzeros


# gptqmodel/utils/model_dequant.py (3-bit field helpers used by the v1 <-> v2 conversion)
def _unpack_cols_3bit(packed: torch.Tensor) -> torch.Tensor:
    rows, cols = packed.shape
    blocks = cols // 3
    words = packed.to(torch.int64).reshape(rows, blocks, 3)
    word0 = words[:, :, 0]
    word1 = words[:, :, 1]
    word2 = words[:, :, 2]
    result = torch.empty((rows, blocks * 32), dtype=torch.int32, device=packed.device)
    unpacked = result.view(rows, blocks, 32)
    for idx in range(10):
        unpacked[:, :, idx] = ((word0 >> (3 * idx)) & 0x7).to(torch.int32)
    unpacked[:, :, 10] = (
        ((word0 >> 30) & 0x3) | (((word1 >> 0) << 2) & 0x4)
    ).to(torch.int32)
    for idx in range(10):
        unpacked[:, :, 11 + idx] = ((word1 >> (1 + 3 * idx)) & 0x7).to(torch.int32)
    unpacked[:, :, 21] = (
        ((word1 >> 31) & 0x1) | (((word2 >> 0) << 1) & 0x6)
    ).to(torch.int32)
    for idx in range(10):
        unpacked[:, :, 22 + idx] = ((word2 >> (2 + 3 * idx)) & 0x7).to(torch.int32)
    return result


def _pack_cols_3bit(values: torch.Tensor, *, pack_dtype: torch.dtype) -> torch.Tensor:
    rows, cols = values.shape
    blocks = cols // 32
    values_i64 = (values.to(torch.int64) & 0x7).reshape(rows, blocks, 32)
    mask32 = (1 << 32) - 1
    word0 = torch.zeros((rows, blocks), dtype=torch.int64, device=values.device)
    for idx in range(10):
        word0 |= values_i64[:, :, idx] << (3 * idx)
    word0 |= values_i64[:, :, 10] << 30
    word1 = (values_i64[:, :, 10] >> 2) & 0x1
    for idx in range(10):
        word1 |= values_i64[:, :, 11 + idx] << (1 + 3 * idx)
    word1 |= values_i64[:, :, 21] << 31
    word2 = (values_i64[:, :, 21] >> 1) & 0x3
    for idx in range(10):
        word2 |= values_i64[:, :, 22 + idx] << (2 + 3 * idx)
    packed = torch.stack((word0, word1, word2), dim=2).reshape(rows, blocks * 3)
    return (packed & mask32).to(pack_dtype)


def _shift_gptq_qzeros(qzeros: torch.Tensor, bits: int, *, delta: int) -> torch.Tensor:
    zeros = _unpack_cols_3bit(qzeros)
    shifted = (zeros + delta) & ((1 << bits) - 1)
    return _pack_cols_3bit(shifted, pack_dtype=qzeros.dtype)


def gptqmodel_dequantize_weight(m) -> t.Tensor:
    """ref: `PackableQuantLinear.dequantize_weight` (v2 zeros) with `_dequantize_from_codes`, num_itr=1;
    the wf buffers as `_init_wf_unsqueeze_buffers` makes them. Returns (in, out) in the scale dtype."""
    dequant_dtype = t.int16 if m.bits == 8 else t.int8  # ref: BaseQuantLinear.__init__
    if m.bits in [2, 4, 8]:
        wf = t.tensor(list(range(0, m.pack_dtype_bits, m.bits)), dtype=t.int32).unsqueeze(0)
    else:
        wf = t.tensor([[0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 0],
                       [0, 1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31],
                       [0, 2, 5, 8, 11, 14, 17, 20, 23, 26, 29, 0]], dtype=t.int32).reshape(1, 3, 12)
    wf_unsqueeze_zero, wf_unsqueeze_neg_one = wf.unsqueeze(0), wf.unsqueeze(-1)
    if m.bits in [2, 4, 8]:
        zeros = t.bitwise_right_shift(
            t.unsqueeze(m.qzeros, 2).expand(-1, -1, m.pack_factor),
            wf_unsqueeze_zero
        ).to(dequant_dtype)
        zeros = t.bitwise_and(zeros, m.maxq).reshape(m.scales.shape)
        weight = t.bitwise_and(
            t.bitwise_right_shift(
                t.unsqueeze(m.qweight, 1).expand(-1, m.pack_factor, -1),
                wf_unsqueeze_neg_one
            ).to(dequant_dtype),
            m.maxq
        )
    elif m.bits == 3:
        zeros = m.qzeros.reshape(m.qzeros.shape[0], m.qzeros.shape[1] // 3, 3, 1).expand(-1, -1, -1, 12)
        zeros = t.bitwise_right_shift(zeros, wf_unsqueeze_zero)
        zeros[:, :, 0, 10] = (zeros[:, :, 0, 10] & 0x3) | (t.bitwise_left_shift(zeros[:, :, 1, 0], 2) & 0x4)
        zeros[:, :, 1, 11] = (zeros[:, :, 1, 11] & 0x1) | (t.bitwise_left_shift(zeros[:, :, 2, 0], 1) & 0x6)
        zeros = zeros & 0x7
        zeros = t.cat([zeros[:, :, 0, :11], zeros[:, :, 1, 1:12], zeros[:, :, 2, 1:11]], dim=2
                      ).reshape(m.scales.shape)
        weight = m.qweight.reshape(m.qweight.shape[0] // 3, 3, 1, m.qweight.shape[1]).expand(-1, -1, 12, -1)
        weight = t.bitwise_right_shift(weight, wf_unsqueeze_neg_one) & 0x7
        weight[:, 0, 10] = (weight[:, 0, 10] & 0x3) | (t.bitwise_left_shift(weight[:, 1, 0], 2) & 0x4)
        weight[:, 1, 11] = (weight[:, 1, 11] & 0x1) | (t.bitwise_left_shift(weight[:, 2, 0], 1) & 0x6)
        weight = weight & 0x7
        weight = t.cat([weight[:, 0, :11], weight[:, 1, 1:12], weight[:, 2, 1:11]], dim=1)
    weight = weight.reshape(weight.shape[0] * weight.shape[1], weight.shape[2])
    return m.scales[m.g_idx.long()] * (weight - zeros[m.g_idx.long()])


# --------------------------------------------------------------------------------------------------
# auto-gptq (github.com/AutoGPTQ/AutoGPTQ @ 9f7d370), auto_gptq/nn_modules/qlinear/qlinear_cuda_old.py
# --------------------------------------------------------------------------------------------------
def autogptq_cuda_old_pack(linear: nn.Linear, scales: t.Tensor, zeros: t.Tensor, bits: int, group_size: int):
    """ref: `QuantLinear.pack` (writes v1 zeros: zero - 1). Returns an object with qweight/qzeros/scales/g_idx."""
    self = SimpleNamespace(bits=bits, infeatures=linear.in_features, outfeatures=linear.out_features,
                           group_size=group_size if group_size != -1 else linear.in_features)
    self.g_idx = torch.tensor([i // self.group_size for i in range(self.infeatures)], dtype=torch.int32)
    # --- verbatim from here ---
    W = linear.weight.data.clone()

    scales = scales.t().contiguous()
    zeros = zeros.t().contiguous()
    scale_zeros = zeros * scales
    self.scales = scales.clone().to(dtype=linear.weight.dtype)
    if linear.bias is not None:
        self.bias = linear.bias.clone().to(dtype=linear.weight.dtype)

    intweight = []
    for idx in range(self.infeatures):
        g_idx = idx // self.group_size
        intweight.append(torch.round((W[:, idx] + scale_zeros[g_idx]) / self.scales[g_idx]).to(torch.int)[:, None])
    intweight = torch.cat(intweight, dim=1)
    intweight = intweight.t().contiguous()
    intweight = intweight.numpy().astype(np.uint32)

    i = 0
    row = 0
    qweight = np.zeros((intweight.shape[0] // 32 * self.bits, intweight.shape[1]), dtype=np.uint32)
    while row < qweight.shape[0]:
        if self.bits in [2, 4, 8]:
            for j in range(i, i + (32 // self.bits)):
                qweight[row] |= intweight[j] << (self.bits * (j - i))
            i += 32 // self.bits
            row += 1
        elif self.bits == 3:
            for j in range(i, i + 10):
                qweight[row] |= intweight[j] << (3 * (j - i))
            i += 10
            qweight[row] |= intweight[i] << 30
            row += 1
            qweight[row] |= (intweight[i] >> 2) & 1
            i += 1
            for j in range(i, i + 10):
                qweight[row] |= intweight[j] << (3 * (j - i) + 1)
            i += 10
            qweight[row] |= intweight[i] << 31
            row += 1
            qweight[row] |= (intweight[i] >> 1) & 0x3
            i += 1
            for j in range(i, i + 10):
                qweight[row] |= intweight[j] << (3 * (j - i) + 2)
            i += 10
            row += 1
        else:
            raise NotImplementedError("Only 2,3,4,8 bits are supported.")

    qweight = qweight.astype(np.int32)
    self.qweight = torch.from_numpy(qweight)

    zeros -= 1
    zeros = zeros.numpy().astype(np.uint32)
    qzeros = np.zeros((zeros.shape[0], zeros.shape[1] // 32 * self.bits), dtype=np.uint32)
    i = 0
    col = 0
    while col < qzeros.shape[1]:
        if self.bits in [2, 4, 8]:
            for j in range(i, i + (32 // self.bits)):
                qzeros[:, col] |= zeros[:, j] << (self.bits * (j - i))
            i += 32 // self.bits
            col += 1
        elif self.bits == 3:
            for j in range(i, i + 10):
                qzeros[:, col] |= zeros[:, j] << (3 * (j - i))
            i += 10
            qzeros[:, col] |= zeros[:, i] << 30
            col += 1
            qzeros[:, col] |= (zeros[:, i] >> 2) & 1
            i += 1
            for j in range(i, i + 10):
                qzeros[:, col] |= zeros[:, j] << (3 * (j - i) + 1)
            i += 10
            qzeros[:, col] |= zeros[:, i] << 31
            col += 1
            qzeros[:, col] |= (zeros[:, i] >> 1) & 0x3
            i += 1
            for j in range(i, i + 10):
                qzeros[:, col] |= zeros[:, j] << (3 * (j - i) + 2)
            i += 10
            col += 1
        else:
            raise NotImplementedError("Only 2,3,4,8 bits are supported.")

    qzeros = qzeros.astype(np.int32)
    self.qzeros = torch.from_numpy(qzeros)
    return self


# --------------------------------------------------------------------------------------------------
# AutoAWQ (github.com/casper-hansen/AutoAWQ @ 88e4c76)
# --------------------------------------------------------------------------------------------------
def autoawq_gemm_from_linear(linear: nn.Linear, w_bit: int, group_size: int, scales: t.Tensor, zeros: t.Tensor):
    """ref: awq/modules/linear/gemm.py `WQLinear_GEMM.from_linear` (scales, zeros: (n_groups, out)).
    Returns an object with qweight/qzeros/scales."""
    awq_linear = SimpleNamespace(w_bit=w_bit, in_features=linear.in_features, out_features=linear.out_features)
    # --- verbatim from here ---
    scale_zeros = zeros * scales

    awq_linear.scales = scales.clone().half()
    if linear.bias is not None:
        awq_linear.bias = linear.bias.clone().half()

    pack_num = 32 // awq_linear.w_bit

    intweight = []
    for idx in range(awq_linear.in_features):
        intweight.append(
            torch.round(
                (linear.weight.data[:, idx] + scale_zeros[idx // group_size])
                / awq_linear.scales[idx // group_size]
            ).to(torch.int)[:, None]
        )
    intweight = torch.cat(intweight, dim=1)
    intweight = intweight.t().contiguous()
    intweight = intweight.to(dtype=torch.int32)

    qweight = torch.zeros(
        (intweight.shape[0], intweight.shape[1] // 32 * awq_linear.w_bit),
        dtype=torch.int32,
        device=intweight.device,
    )

    for col in range(intweight.shape[1] // pack_num):
        if awq_linear.w_bit == 4:
            order_map = [0, 2, 4, 6, 1, 3, 5, 7]
        else:
            raise NotImplementedError("Only 4-bit are supported for now.")
        for i in range(pack_num):
            qweight_col = intweight[:, col * pack_num + order_map[i]]
            qweight[:, col] |= qweight_col << (i * awq_linear.w_bit)
    awq_linear.qweight = qweight

    zeros = zeros.to(dtype=torch.int32)

    qzeros = torch.zeros(
        (zeros.shape[0], zeros.shape[1] // 32 * awq_linear.w_bit),
        dtype=torch.int32,
        device=zeros.device,
    )

    for col in range(zeros.shape[1] // pack_num):
        if awq_linear.w_bit == 4:
            order_map = [0, 2, 4, 6, 1, 3, 5, 7]
        else:
            raise NotImplementedError("Only 4-bit are supported for now.")
        for i in range(pack_num):
            qzero_col = zeros[:, col * pack_num + order_map[i]]
            qzeros[:, col] |= qzero_col << (i * awq_linear.w_bit)
    awq_linear.qzeros = qzeros

    return awq_linear


# awq/utils/packing_utils.py
AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]


def unpack_awq(qweight: torch.Tensor, qzeros: torch.Tensor, bits: int):
    shifts = torch.arange(0, 32, bits, device=qzeros.device)
    iweights = torch.bitwise_right_shift(qweight[:, :, None], shifts[None, None, :]).to(torch.int8)
    iweights = iweights.view(iweights.shape[0], -1)
    izeros = torch.bitwise_right_shift(qzeros[:, :, None], shifts[None, None, :]).to(torch.int8)
    izeros = izeros.view(izeros.shape[0], -1)
    return iweights, izeros


def reverse_awq_order(iweights: torch.Tensor, izeros: torch.Tensor, bits: int):
    reverse_order_tensor = torch.arange(iweights.shape[-1], dtype=torch.int32, device=izeros.device)
    reverse_order_tensor = reverse_order_tensor.view(-1, 32 // bits)
    reverse_order_tensor = reverse_order_tensor[:, AWQ_REVERSE_ORDER]
    reverse_order_tensor = reverse_order_tensor.view(-1)
    izeros = izeros[:, reverse_order_tensor]
    iweights = iweights[:, reverse_order_tensor]
    return iweights, izeros


def awq_dequantize_gemm(qweight, qzeros, scales, bits, group_size):
    """ref: `dequantize_gemm`: (in, out) in the scale dtype."""
    iweight, izeros = unpack_awq(qweight, qzeros, bits)
    iweight, izeros = reverse_awq_order(iweight, izeros, bits)
    iweight = torch.bitwise_and(iweight, (2**bits) - 1)
    izeros = torch.bitwise_and(izeros, (2**bits) - 1)
    scales = scales.repeat_interleave(group_size, dim=0)
    izeros = izeros.repeat_interleave(group_size, dim=0)
    iweight = (iweight - izeros) * scales
    return iweight
