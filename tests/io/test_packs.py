"""Quantized packs and LoRA adapters read as dequantized / merged weights, compared with upstream code.

References, never normscope itself: GPTQModel's and auto-gptq's GPTQ packers and GPTQModel's
dequantizer, AutoAWQ's GEMM packer and dequantizer (ported verbatim in pack_refs.py, since none of
them installs on a CPU-only machine), optimum-quanto's own quantize/freeze/save and dequantize,
compressed-tensors' own compressors, transformers' FP8 quantize/dequantize, and peft's
`merge_and_unload()`.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import pack_refs as refs
from normscope.errors import CheckpointError
from normscope.io import open_path, open_source
from normscope.io.packs import PACKS, PackedCheckpoint

LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": 1, "hidden_size": 128,
         "intermediate_size": 192, "num_attention_heads": 2, "head_dim": 64, "tie_word_embeddings": False}


def _write(directory: Path, tensors: dict[str, torch.Tensor], qconfig: dict | None = None,
           config: dict | None = LLAMA) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, directory / "model.safetensors", {"format": "pt"})
    if config is not None:
        (directory / "config.json").write_text(json.dumps({**config, **({"quantization_config": qconfig}
                                                                         if qconfig else {})}))
    return directory


def _read(directory: Path, name: str, **kw) -> np.ndarray:
    with open_path(directory, **kw) as ckpt:
        return ckpt.read(ckpt.entries[name])


def _minmax(w: torch.Tensor, bits: int, group: int, sym: bool, g_idx: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group (scales, zeros), (out, n_groups), as GPTQ's Quantizer.find_params computes them."""
    maxq = 2 ** bits - 1
    n_groups = w.shape[1] // group
    scales, zeros = torch.empty(w.shape[0], n_groups), torch.empty(w.shape[0], n_groups)
    for g in range(n_groups):
        cols = w[:, g_idx == g]
        lo, hi = cols.min(1).values.clamp(max=0), cols.max(1).values.clamp(min=0)
        if sym:
            hi = torch.maximum(-lo, hi)
            lo = -hi
        s = (hi - lo).clamp(min=1e-5) / maxq
        scales[:, g] = s
        zeros[:, g] = torch.full_like(s, (maxq + 1) // 2) if sym else torch.round(-lo / s).clamp(0, maxq)
    return scales, zeros


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def test_registry_is_data():
    assert [f.name for f in PACKS] == ["gptq", "awq", "quanto", "compressed-tensors", "fp8", "bitsandbytes",
                                       "mxfp4"]


# -- GPTQ --------------------------------------------------------------------------------------------
GPTQ_CASES = [(b, sym, act, fmt) for b in (2, 3, 4, 8) for sym in (True, False) for act in (False, True)
              for fmt in ("gptq", "gptq_v2")]


def _gptq_pack(tmp_path: Path, bits: int, sym: bool, act: bool, fmt: str, out: int = 64, inp: int = 128,
               group: int = 32, seed: int = 0):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(inp, out, bias=True)
    lin.weight.data.normal_(0, 0.02)
    g_idx = (torch.randperm(inp) // group if act else torch.arange(inp) // group).to(torch.int32)
    scales, zeros = _minmax(lin.weight.data, bits, group, sym, g_idx)
    m = refs.gptqmodel_pack_original(lin, scales, zeros, g_idx, bits, group)
    qzeros = m.qzeros if fmt == "gptq_v2" else refs.gptqmodel_v2_to_v1(m.qzeros, bits)
    tensors = {"model.layers.0.mlp.up_proj.qweight": m.qweight, "model.layers.0.mlp.up_proj.qzeros": qzeros,
               "model.layers.0.mlp.up_proj.scales": m.scales, "model.layers.0.mlp.up_proj.g_idx": m.g_idx,
               "model.layers.0.mlp.up_proj.bias": m.bias, "model.norm.weight": torch.ones(inp)}
    qconfig = {"quant_method": "gptq", "bits": bits, "group_size": group, "sym": sym, "desc_act": act,
               "checkpoint_format": fmt}
    return m, lin, tensors, qconfig


@pytest.mark.parametrize("bits,sym,act,fmt", GPTQ_CASES, ids=[
    f"{b}bit-{'sym' if s else 'asym'}-{'act' if a else 'plain'}-{f}" for b, s, a, f in GPTQ_CASES])
def test_gptq_equals_gptqmodel_dequantize(tmp_path, bits, sym, act, fmt):
    m, lin, tensors, qconfig = _gptq_pack(tmp_path, bits, sym, act, fmt)
    d = _write(tmp_path / "gptq", tensors, qconfig)
    expected = refs.gptqmodel_dequantize_weight(m).T.float().numpy()  # v2 zeros, GPTQModel's own unpacking
    with open_path(d) as ckpt:
        assert isinstance(ckpt, PackedCheckpoint) and ckpt.pack == "gptq"
        assert sorted(ckpt.entries) == ["model.layers.0.mlp.up_proj.bias", "model.layers.0.mlp.up_proj.weight",
                                        "model.norm.weight"]  # qzeros, scales, g_idx are not tensors
        e = ckpt.entries["model.layers.0.mlp.up_proj.weight"]
        assert e.shape == (64, 128) and e.dtype == f"GPTQ_{bits}bit_g32" + ("_act" if act else "")
        got = ckpt.read(e)
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(ckpt.read(ckpt.entries["model.layers.0.mlp.up_proj.bias"]),
                                      m.bias.float().numpy())
    step = (2 ** bits - 1) if bits < 8 else 255
    assert np.abs(got - lin.weight.data.numpy()).max() <= lin.weight.data.abs().max().item() * 2 / step


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_gptq_v1_as_auto_gptq_packs_it(tmp_path, bits):
    """auto-gptq's qlinear_cuda_old packer writes zero - 1 field by field; read as checkpoint_format gptq."""
    torch.manual_seed(bits)
    lin = torch.nn.Linear(128, 64, bias=False)
    scales, zeros = _minmax(lin.weight.data, bits, 32, True, torch.arange(128) // 32)
    # auto-gptq packs the weight GPTQ already fake-quantized (it does not clamp the codes itself)
    s, z = scales.repeat_interleave(32, 1), zeros.repeat_interleave(32, 1)
    lin.weight.data = s * (torch.clamp(torch.round(lin.weight.data / s + z), 0, 2 ** bits - 1) - z)
    m = refs.autogptq_cuda_old_pack(lin, scales, zeros.clone(), bits, 32)
    d = _write(tmp_path / "v1", {"l.qweight": m.qweight, "l.qzeros": m.qzeros, "l.scales": m.scales.half(),
                                 "l.g_idx": m.g_idx}, {"quant_method": "gptq", "bits": bits, "group_size": 32})
    # expected: the unpacked codes as GPTQModel reads them after its own v1 -> v2 conversion
    m2 = refs.gptqmodel_pack_original(lin, scales, zeros, None, bits, 32)
    m2.scales = m.scales.half()
    np.testing.assert_array_equal(_read(d, "l.weight"), refs.gptqmodel_dequantize_weight(m2).T.float().numpy())


def test_gptq_without_config_from_tensor_names(tmp_path):
    m, _, tensors, _ = _gptq_pack(tmp_path, 4, False, True, "gptq")
    d = _write(tmp_path / "bare", tensors, config=None)
    with open_path(d) as ckpt:
        e = ckpt.entries["model.layers.0.mlp.up_proj.weight"]
        assert e.dtype == "GPTQ_4bit_g32"
        np.testing.assert_array_equal(ckpt.read(e), refs.gptqmodel_dequantize_weight(m).T.float().numpy())


# -- AWQ ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("group", [32, 64, 128])
def test_awq_equals_autoawq_dequantize_gemm(tmp_path, group):
    torch.manual_seed(group)
    lin = torch.nn.Linear(128, 96, bias=True)  # ref: WQLinear_GEMM packs out_features // 32 · 4 words
    w = lin.weight.data.reshape(96, -1, group)
    lo, hi = w.amin(-1), w.amax(-1)
    scales = ((hi - lo).clamp(min=1e-5) / 15)  # ref: AutoAWQ quantizer.pseudo_quantize_tensor (zero point)
    zeros = (-torch.round(lo / scales)).clamp(0, 15)
    q = refs.autoawq_gemm_from_linear(lin, 4, group, scales.t().contiguous(), zeros.t().contiguous())
    tensors = {"model.layers.0.self_attn.q_proj.qweight": q.qweight, "model.layers.0.self_attn.q_proj.qzeros": q.qzeros,
               "model.layers.0.self_attn.q_proj.scales": q.scales, "model.layers.0.self_attn.q_proj.bias": q.bias}
    d = _write(tmp_path / "awq", tensors, {"quant_method": "awq", "bits": 4, "group_size": group,
                                           "zero_point": True, "version": "gemm"})
    expected = refs.awq_dequantize_gemm(q.qweight, q.qzeros, q.scales, 4, group).T.float().numpy()
    with open_path(d) as ckpt:
        e = ckpt.entries["model.layers.0.self_attn.q_proj.weight"]
        label = f"AWQ_4bit_g{group}" if group < 128 else "AWQ_4bit_ch"  # 128 inputs in one group: per channel
        assert (e.shape, e.dtype, ckpt.pack) == ((96, 128), label, "awq")
        np.testing.assert_array_equal(ckpt.read(e), expected)
        for chunk in (128, 5 * 128, 9 * 128):  # chunks that cut through a word of 8 outputs
            rows = np.concatenate([b for _, b in ckpt.iter_rows(e, chunk)])
            np.testing.assert_array_equal(rows, expected)
    # without any config the scales' shape tells AWQ from GPTQ
    (d / "config.json").unlink()
    np.testing.assert_array_equal(_read(d, "model.layers.0.self_attn.q_proj.weight"), expected)


# -- optimum-quanto ------------------------------------------------------------------------------------
QUANTO = [(q, dt) for q in ("qint8", "qint4", "qint2", "qfloat8") for dt in ("float32", "bfloat16")]


@pytest.mark.parametrize("qtype,dtype", QUANTO, ids=[f"{q}-{d}" for q, d in QUANTO])
def test_quanto_equals_quanto_dequantize(tmp_path, qtype, dtype):
    import transformers
    from optimum import quanto
    from optimum.quanto import QuantizedModelForCausalLM
    from optimum.quanto.nn import QModuleMixin

    # hidden 256 > 128: grouped qint4/qint2 (group 128), whose (out, in) the file does not store
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=256, intermediate_size=384, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1, head_dim=128)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).to(getattr(torch, dtype))
    QuantizedModelForCausalLM.quantize(model, weights=getattr(quanto, qtype), exclude="lm_head") \
        .save_pretrained(tmp_path / "q")
    expected = {n + ".weight": mod.weight.dequantize().float().detach().numpy()
                for n, mod in model.named_modules() if isinstance(mod, QModuleMixin)}
    assert len(expected) == 7
    with open_path(tmp_path / "q") as ckpt:
        assert ckpt.pack == "quanto"
        assert not [n for n in ckpt.entries if "._" in n or n.endswith(("input_scale", "output_scale"))]
        for name, ref in expected.items():
            e = ckpt.entries[name]
            assert e.shape == ref.shape and e.dtype.startswith(f"quanto_{qtype}")
            np.testing.assert_array_equal(ckpt.read(e), ref, err_msg=name)
        assert ckpt.entries["lm_head.weight"].dtype == {"float32": "F32", "bfloat16": "BF16"}[dtype]


def test_quanto_shape_from_bias_without_config(tmp_path):
    from optimum.quanto import freeze, qint4, quantize, quantization_map

    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(384, 256), torch.nn.Linear(256, 384))
    quantize(model, weights=qint4)
    freeze(model)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "model.safetensors")
    (tmp_path / "quanto_qmap.json").write_text(json.dumps(quantization_map(model)))
    with open_path(tmp_path) as ckpt:
        for i in (0, 1):
            e = ckpt.entries[f"{i}.weight"]
            assert e.shape == tuple(model[i].weight.shape)
            np.testing.assert_array_equal(ckpt.read(e), model[i].weight.dequantize().detach().numpy())


# -- compressed-tensors ----------------------------------------------------------------------------------
CT = [("pack-quantized", dict(num_bits=4, type="int", symmetric=True, strategy="group", group_size=32)),
      ("pack-quantized", dict(num_bits=4, type="int", symmetric=False, strategy="group", group_size=32)),
      ("pack-quantized", dict(num_bits=3, type="int", symmetric=False, strategy="channel")),
      ("pack-quantized", dict(num_bits=2, type="int", symmetric=True, strategy="group", group_size=64)),
      ("pack-quantized", dict(num_bits=8, type="int", symmetric=True, strategy="channel")),
      ("naive-quantized", dict(num_bits=8, type="int", symmetric=False, strategy="channel")),
      ("float-quantized", dict(num_bits=8, type="float", symmetric=True, strategy="channel")),
      ("float-quantized", dict(num_bits=8, type="float", symmetric=True, strategy="block", block_structure=[32, 64])),
      ("naive-quantized", dict(num_bits=8, type="int", symmetric=True, strategy="tensor"))]


def _ct_qparams(w: torch.Tensor, args) -> tuple[torch.Tensor, torch.Tensor]:
    from compressed_tensors.quantization.utils import calculate_qparams

    out, inp = w.shape
    if args.strategy == "group":
        g = w.reshape(out, -1, args.group_size)
        lo, hi = g.amin(-1), g.amax(-1)
    elif args.strategy == "channel":
        lo, hi = w.amin(1, keepdim=True), w.amax(1, keepdim=True)
    elif args.strategy == "block":
        bh, bw = args.block_structure
        b = torch.nn.functional.pad(w, (0, -inp % bw, 0, -out % bh)).reshape(-(-out // bh), bh, -(-inp // bw), bw)
        lo, hi = b.amin((1, 3)), b.amax((1, 3))
    else:
        lo, hi = w.amin().reshape(1), w.amax().reshape(1)
    return calculate_qparams(lo, hi, args)


@pytest.mark.parametrize("fmt,kw", CT, ids=[f"{f}-{k['type']}{k['num_bits']}-{k['strategy']}-"
                                            f"{'sym' if k['symmetric'] else 'asym'}" for f, k in CT])
def test_compressed_tensors_equals_its_decompress(tmp_path, fmt, kw):
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    args = QuantizationArgs(**kw)
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    compressor = BaseCompressor.get_value_from_registry(fmt)
    torch.manual_seed(3)
    w = (torch.randn(96, 192) * 0.02).to(torch.bfloat16)
    scale, zp = _ct_qparams(w, args)
    state = {"weight": w, "weight_scale": scale.to(torch.bfloat16)}
    if not args.symmetric:
        state["weight_zero_point"] = zp
    packed = compressor.compress(dict(state), scheme)
    expected = compressor.decompress(dict(packed), scheme)["weight"].float().numpy()
    tensors = {f"model.layers.0.mlp.down_proj.{k}": v for k, v in packed.items()}
    tensors["lm_head.weight"] = torch.zeros(8, 192, dtype=torch.bfloat16)
    qconfig = {"quant_method": "compressed-tensors", "format": fmt, "ignore": ["lm_head"],
               "config_groups": {"group_0": {"targets": ["Linear"], "weights": args.model_dump(mode="json")}}}
    d = _write(tmp_path / "ct", tensors, qconfig)
    with open_path(d) as ckpt:
        assert sorted(ckpt.entries) == ["lm_head.weight", "model.layers.0.mlp.down_proj.weight"]
        e = ckpt.entries["model.layers.0.mlp.down_proj.weight"]
        assert e.shape == (96, 192) and e.dtype.startswith("CT_")
        np.testing.assert_array_equal(ckpt.read(e), expected)
        for chunk in (192, 7 * 192, 50 * 192):
            np.testing.assert_array_equal(np.concatenate([b for _, b in ckpt.iter_rows(e, chunk)]), expected)


def test_compressed_tensors_pack_functions_without_config(tmp_path):
    """compressed-tensors' own pack_to_int32, 5-bit codes straddling words; bits and layout from shapes."""
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    torch.manual_seed(5)
    codes = torch.randint(-16, 16, (40, 100), dtype=torch.int8)
    scale = torch.rand(40, 1) * 0.01
    d = _write(tmp_path / "ct5", {"m.weight_packed": pack_to_int32(codes, 5), "m.weight_scale": scale,
                                  "m.weight_shape": torch.tensor([40, 100])}, config=None)
    np.testing.assert_array_equal(_read(d, "m.weight"), (codes.float() * scale).numpy())


# -- FP8 with block scales -------------------------------------------------------------------------------
def test_fp8_blocks_equal_transformers_dequantize(tmp_path):
    from transformers.integrations.finegrained_fp8 import Fp8Dequantize, Fp8Quantize, _dequantize_fp8_weight
    from types import SimpleNamespace

    torch.manual_seed(7)
    cfg = SimpleNamespace(weight_block_size=[128, 128], scale_fmt=None)
    quant = Fp8Quantize(SimpleNamespace(quantization_config=cfg))
    w = torch.randn(256, 384) * 0.05
    q = quant._quantize_one("model.layers.0.self_attn.o_proj.weight", w)
    expected = Fp8Dequantize(None)._dequantize_one(q["model.layers.0.self_attn.o_proj.weight"],
                                                   q["model.layers.0.self_attn.o_proj.weight_scale_inv"],
                                                   torch.float32).numpy()
    # a DeepSeek-V3 shape with partial blocks (200 = 128 + 72 rows, 300 = 2·128 + 44 columns)
    w2 = torch.randn(200, 300) * 0.05
    grid = torch.nn.functional.pad(w2, (0, 84, 0, 56)).reshape(2, 128, 3, 128).abs().amax((1, 3)) / 448.0
    q2 = (w2 / grid.repeat_interleave(128, 0)[:200].repeat_interleave(128, 1)[:, :300]).to(torch.float8_e4m3fn)
    expected2 = _dequantize_fp8_weight(q2.clone(), grid, [128, 128], torch.float32).numpy()
    tensors = {**q, "model.layers.0.mlp.down_proj.weight": q2, "model.layers.0.mlp.down_proj.weight_scale_inv": grid,
               "model.norm.weight": torch.ones(128, dtype=torch.bfloat16)}
    d = _write(tmp_path / "fp8", tensors, {"quant_method": "fp8", "weight_block_size": [128, 128],
                                           "activation_scheme": "dynamic"})
    with open_path(d) as ckpt:
        assert ckpt.pack == "fp8" and not [n for n in ckpt.entries if "scale" in n]
        e = ckpt.entries["model.layers.0.self_attn.o_proj.weight"]
        assert e.dtype == "FP8_E4M3_b128"
        np.testing.assert_array_equal(ckpt.read(e), expected)
        e2 = ckpt.entries["model.layers.0.mlp.down_proj.weight"]
        for chunk in (300, 100 * 300, 10 ** 6):
            np.testing.assert_array_equal(np.concatenate([b for _, b in ckpt.iter_rows(e2, chunk)]), expected2)
    (d / "config.json").unlink()  # names alone: weight_scale_inv next to an F8_E4M3 weight
    np.testing.assert_array_equal(_read(d, "model.layers.0.mlp.down_proj.weight"), expected2)


# -- LoRA -------------------------------------------------------------------------------------------------
def _tiny_llama(dtype=torch.float32, bias: bool = False):
    import transformers

    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False,
                                   attention_bias=bias, mlp_bias=bias)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).to(dtype)


LORA = [("plain", torch.float32), ("patterns-rslora-bias", torch.float32), ("plain", torch.bfloat16)]


@pytest.mark.parametrize("variant,dtype", LORA, ids=[f"{v}-{str(d)[6:]}" for v, d in LORA])
def test_lora_equals_peft_merge_and_unload(tmp_path, variant, dtype):
    import peft

    base = _tiny_llama(dtype, bias=variant != "plain")  # peft merges lora_bias only into an existing bias
    base.save_pretrained(tmp_path / "base")
    kw = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj", "embed_tokens"],
              init_lora_weights=False, modules_to_save=["lm_head"])
    if variant != "plain":  # (peft has no lora_bias for embeddings)
        kw.update(rank_pattern={"down_proj": 2}, alpha_pattern={"q_proj": 3}, use_rslora=True, lora_bias=True,
                  target_modules=["q_proj", "v_proj", "down_proj"])
    model = peft.get_peft_model(base, peft.LoraConfig(**kw))
    with torch.no_grad():
        model.base_model.model.lm_head.modules_to_save["default"].weight.mul_(2)
    model.save_pretrained(tmp_path / "adapter")
    merged = {k: v.float().numpy() for k, v in model.merge_and_unload().state_dict().items()}
    with open_path(tmp_path / "base", adapter=tmp_path / "adapter") as ckpt:
        assert ckpt.pack == "lora" and set(ckpt.entries) == set(merged)
        stored = "BF16" if dtype == torch.bfloat16 else "F32"
        assert ckpt.entries["model.layers.0.self_attn.q_proj.weight"].dtype == f"LoRA({stored})"
        for name, ref in merged.items():
            got = ckpt.read(ckpt.entries[name])
            if dtype == torch.bfloat16:  # delta's float32 sums may round to the other bf16 neighbour, and
                # W + delta then differs by a step of the operands (not of the possibly tiny result)
                step = 2.0 ** -7 * (np.abs(_read(tmp_path / "base", name)) + np.abs(ref)) + 1e-6
                assert (np.abs(got - ref) <= step).all(), name
            else:
                np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7, err_msg=name)
        changed = [n for n in merged if not np.array_equal(merged[n], _read(tmp_path / "base", n))]
        assert len(changed) >= 4  # q, v, down, lm_head, embed_tokens or the q/v/down biases


def test_lora_fan_in_fan_out_conv1d(tmp_path):
    import peft
    import transformers

    torch.manual_seed(0)
    base = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50,
                                                                n_positions=16))
    base.save_pretrained(tmp_path / "base")
    model = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=16, target_modules=["c_attn"],
                                                      fan_in_fan_out=True, init_lora_weights=False))
    model.save_pretrained(tmp_path / "adapter")
    ref = model.merge_and_unload().state_dict()["transformer.h.0.attn.c_attn.weight"].numpy()
    got = _read(tmp_path / "base", "transformer.h.0.attn.c_attn.weight", adapter=tmp_path / "adapter")
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)


def test_lora_over_a_gptq_base(tmp_path):
    """Adapters stack on packs: the merge reads the base's dequantized rows."""
    m, _, tensors, qconfig = _gptq_pack(tmp_path, 4, True, False, "gptq_v2")
    base = _write(tmp_path / "base", tensors, qconfig)
    a, b = np.random.default_rng(0).normal(size=(2, 128)), np.random.default_rng(1).normal(size=(64, 2))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4}))
    prefix = "base_model.model.model.layers.0.mlp.up_proj"
    save_file({f"{prefix}.lora_A.weight": torch.tensor(a, dtype=torch.float32),
               f"{prefix}.lora_B.weight": torch.tensor(b, dtype=torch.float32)}, adapter / "adapter_model.safetensors")
    expected = refs.gptqmodel_dequantize_weight(m).T.float().numpy() + 2.0 * (b @ a)
    info, ckpt = open_source(str(base), adapter=str(adapter))
    with ckpt:
        e = ckpt.entries["model.layers.0.mlp.up_proj.weight"]
        assert e.dtype == "LoRA(GPTQ_4bit_g32)" and str(adapter / "adapter_model.safetensors") in info.files
        np.testing.assert_allclose(ckpt.read(e), expected, rtol=1e-6, atol=1e-6)


# -- bounded memory ---------------------------------------------------------------------------------------
def test_gptq_reads_column_slabs_not_the_whole_qweight(tmp_path, monkeypatch):
    from normscope.io.packs import gptq

    _, _, tensors, qconfig = _gptq_pack(tmp_path, 4, False, True, "gptq", out=256, inp=256)
    d = _write(tmp_path / "big", tensors, qconfig)
    seen = []
    real = gptq.read_block

    def spy(ckpt, entry, row0, n_rows, col0=0, n_cols=None):
        block = real(ckpt, entry, row0, n_rows, col0, n_cols)
        seen.append((entry.name.rsplit(".", 1)[-1], block.size))
        return block

    monkeypatch.setattr(gptq, "read_block", spy)
    with open_path(d) as ckpt:
        e = ckpt.entries["model.layers.0.mlp.up_proj.weight"]
        whole = ckpt.read(e)
        seen.clear()
        for chunk in (256, 3 * 256, 17 * 256, 100 * 256):
            rows = np.concatenate([b for _, b in ckpt.iter_rows(e, chunk)])
            np.testing.assert_array_equal(rows, whole)
            qweight_words = max(n for k, n in seen if k == "qweight")
            assert qweight_words <= math.ceil(chunk / 256) * 256 // 8  # one slab of the chunk's columns
            seen.clear()


@pytest.mark.parametrize("chunk", [1, 64, 200, 1000, 10 ** 7])
def test_chunked_reads_equal_whole_reads(tmp_path, chunk):
    import transformers  # noqa: F401  (the quanto fixture below needs it)

    _, _, tensors, qconfig = _gptq_pack(tmp_path, 3, False, True, "gptq")
    d = _write(tmp_path / "g", tensors, qconfig)
    with open_path(d) as ckpt:
        for e in ckpt.entries.values():
            whole = ckpt.read(e).reshape(e.n_rows, e.row_len)
            np.testing.assert_array_equal(np.concatenate([b for _, b in ckpt.iter_rows(e, chunk)]), whole)
            if hasattr(ckpt, "iter_chunks"):
                flat = np.concatenate([v.copy() for _, v in ckpt.iter_chunks(e, chunk)])
                np.testing.assert_array_equal(flat, whole.reshape(-1))


# -- corrupt packs ------------------------------------------------------------------------------------------
def _corrupt_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    _, _, tensors, qconfig = _gptq_pack(tmp_path, 4, False, False, "gptq")
    p = "model.layers.0.mlp.up_proj."
    cases = {}
    # qzeros one word too narrow for 64 outputs of 4 bits (8 words expected)
    cases["qzeros"] = (_write(tmp_path / "qz", {**tensors, p + "qzeros": tensors[p + "qzeros"][:, :7]}, qconfig),
                       "qzeros")
    # scales for 3 groups where 128 inputs in groups of 32 make 4
    cases["scales"] = (_write(tmp_path / "sc", {**tensors, p + "scales": tensors[p + "scales"][:3]}, qconfig), "scales")
    # g_idx shorter than the 128 inputs
    cases["g_idx"] = (_write(tmp_path / "gi", {**tensors, p + "g_idx": tensors[p + "g_idx"][:100]}, qconfig), "g_idx")
    # config claims 3 bits: 16 qweight rows are not 3-word blocks
    cases["bits"] = (_write(tmp_path / "bi", tensors, {**qconfig, "bits": 3}), "qweight")
    # a kernel layout normscope does not read
    cases["marlin"] = (_write(tmp_path / "ma", tensors, {**qconfig, "checkpoint_format": "marlin"}), "marlin")
    # g_idx pointing at group 9 of 4
    bad = tensors[p + "g_idx"].clone()
    bad[5] = 9
    cases["g_idx-values"] = (_write(tmp_path / "gv", {**tensors, p + "g_idx": bad}, qconfig), "group indices")
    # a module without its scales
    cases["no-scales"] = (_write(tmp_path / "ns", {k: v for k, v in tensors.items() if k != p + "scales"}, qconfig),
                          "has no model.layers.0.mlp.up_proj.scales; a GPTQ pack needs qweight, qzeros and scales")
    # the file ends inside qweight's bytes (header intact)
    trunc = _write(tmp_path / "tr", tensors, qconfig)
    raw = (trunc / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    end = 8 + n + header[p + "qweight"]["data_offsets"][0] + 100
    (trunc / "model.safetensors").write_bytes(raw[:end])
    cases["truncated"] = (trunc, "")
    return cases


CORRUPT = ["qzeros", "scales", "no-scales", "g_idx", "bits", "marlin", "g_idx-values", "truncated"]


@pytest.mark.parametrize("case", CORRUPT)
def test_corrupt_pack_exit_2_with_one_line(tmp_path, capsys, case):
    from normscope.cli import main

    directory, word = _corrupt_cases(tmp_path)[case]
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(directory), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2, err
    assert len(err.splitlines()) == 1 and word in err and "Traceback" not in err


def test_corrupt_pack_message_names_file_tensor_expected_found(tmp_path):
    directory, _ = _corrupt_cases(tmp_path)["qzeros"]
    with pytest.raises(CheckpointError) as exc:
        open_path(directory)
    assert str(exc.value) == (
        f"{directory / 'model.safetensors'}: tensor 'model.layers.0.mlp.up_proj.qzeros': expected I32 [4, 8] "
        "(4-bit zeros of 64 outputs), found I32 [4, 7]; the pack is corrupt or its quantization config does not "
        "match its tensors")


# -- every command on a pack ---------------------------------------------------------------------------------
def test_analyze_cli_on_gptq_and_with_adapter(tmp_path, capsys):
    from normscope.cli import main

    m, _, tensors, qconfig = _gptq_pack(tmp_path, 4, True, False, "gptq")
    d = _write(tmp_path / "g", tensors, qconfig)
    out = tmp_path / "r.json"
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(d), "--quiet", "--json", str(out)])
    assert exc.value.code == 0
    doc = json.loads(out.read_text())
    t = {x["name"]: x for x in doc["tensors"]}["model.layers.0.mlp.up_proj.weight"]
    assert t["dtype"] == "GPTQ_4bit_g32" and t["shape"] == [64, 128]
    expected = refs.gptqmodel_dequantize_weight(m).T.float().numpy()
    assert t["weight"]["absmax"] == pytest.approx(float(np.abs(expected).max()))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 1, "lora_alpha": 1}))
    save_file({"base_model.model.model.layers.0.mlp.up_proj.lora_A.weight": torch.ones(1, 128),
               "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight": torch.full((64, 1), 10.0)},
              adapter / "adapter_model.safetensors")
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(d), "--adapter", str(adapter), "--quiet", "--json", str(out)])
    assert exc.value.code == 0
    t = {x["name"]: x for x in json.loads(out.read_text())["tensors"]}["model.layers.0.mlp.up_proj.weight"]
    assert t["dtype"] == "LoRA(GPTQ_4bit_g32)" and t["weight"]["absmax"] == pytest.approx(
        float(np.abs(expected + 10.0).max()), rel=1e-6)


def test_adapter_dir_alone_is_not_a_model(tmp_path):
    from normscope.errors import SourceNotFoundError

    (tmp_path / "adapter_config.json").write_text("{}")
    save_file({"x": torch.zeros(1)}, tmp_path / "adapter_model.safetensors")
    with pytest.raises(SourceNotFoundError, match="PEFT adapter"):
        open_path(tmp_path)


def test_unread_method_is_an_error(tmp_path):
    d = _write(tmp_path / "hqq", {"m.weight": torch.zeros(8, 4, dtype=torch.uint8)}, {"quant_method": "hqq"})
    with pytest.raises(CheckpointError, match="'hqq'"):
        open_path(d)
    # bitsandbytes is read, but only its 4-bit quant states: 8-bit and state-less files are refused
    d = _write(tmp_path / "bnb", {"m.weight": torch.zeros(8, 4, dtype=torch.uint8)}, {"quant_method": "bitsandbytes"})
    with pytest.raises(CheckpointError, match="no tensor holds a 4-bit quant state"):
        open_path(d)
    d = _write(tmp_path / "bnb8", {"m.weight": torch.zeros(8, 4, dtype=torch.int8), "m.SCB": torch.ones(8)},
               {"quant_method": "bitsandbytes", "load_in_8bit": True})
    with pytest.raises(CheckpointError, match="8-bit"):
        open_path(d)


def test_docs_example_runs(tmp_path, monkeypatch, capsys):
    """The Python block of docs/packs.md runs as written."""
    text = (Path(__file__).parents[2] / "docs" / "packs.md").read_text(encoding="utf-8")
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/packs.md", "exec"), {})
    assert capsys.readouterr().out.strip() == "quanto_qint4 (256, 384)"


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 8), rows=st.integers(1, 80), cols=st.integers(1, 5), data=st.data())
def test_stream_slabs_equal_compressed_tensors_pack(bits, rows, cols, data):
    """Any slab of a stream packed by compressed-tensors' own pack_to_int32 (down the columns, as zero points
    and GPTQ qzeros/qweight are) unpacks to the codes it holds, straddling values included."""
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    from normscope.io.packs.bits import stream_words, unpack_stream

    seed = data.draw(st.integers(0, 2 ** 16))
    codes = torch.randint(-(1 << (bits - 1)), 1 << (bits - 1), (rows, cols), dtype=torch.int8,
                          generator=torch.Generator().manual_seed(seed))
    words = pack_to_int32(codes, bits, packed_dim=0).numpy()  # (ceil(rows·bits/32), cols)
    first = data.draw(st.integers(0, rows - 1))
    n = data.draw(st.integers(1, rows - first))
    w0, w1 = first * bits // 32, stream_words(first + n, bits)
    got = unpack_stream(words[w0:w1], bits, n, axis=0, bit0=first * bits - 32 * w0)
    np.testing.assert_array_equal(got.astype(np.int16) - (1 << (bits - 1)), codes[first:first + n].numpy())
