"""Convert the SmolLM2 LLaMA GGUF into an ONNX causal LM and a tokenizer.json.

Runs inside the models virtual environment (needs `gguf`, `onnx`, `numpy`); `setup.py`
starts it with that environment's interpreter:

    python convert_smollm2.py --gguf X.gguf --out-dir DIR [--variant fast|fast-gqa|plain]

Outputs in DIR: `model.onnx` (fp32 weights, one file), `tokenizer.json`, and
`convert_info.json` (hyperparameters, special tokens and tensor names for the manifest).

Graph contract (see DESIGN.md, "Causal LM graph contract"):
  inputs   input_ids int64 [batch, seq], attention_mask int64 [batch, total],
           position_ids int64 [batch, seq],
           past_key_values.{i}.key / .value  f32 [batch, kv_heads, past, head_dim]
           logits_from int64 [1] (optional, default 0: an overridable initializer)
  outputs  logits f32 [batch, seq - logits_from, vocab] (all positions unless
           logits_from says where to start: decoding and judging need only the last one),
           present.{i}.key / .value          f32 [batch, kv_heads, total, head_dim]
  with total = past + seq. Query t sits at absolute slot past + t and may attend to slot j
  when j <= past + t and attention_mask[b, j] == 1 (left or right padding both work).

Variants (same weights and contract; VARIANT_OPTIONS below lists their graph options):
  fast      the default: ONNX Runtime fused CPU kernels. SimplifiedLayerNormalization and
            SkipSimplifiedLayerNormalization (residual add + RMSNorm in one op),
            com.microsoft RotaryEmbedding, ONNX Attention (opset 23: grouped-query heads,
            past/present cache, one additive causal+padding mask built once per forward),
            one MatMul for q|k and one for v, separate gate and up MatMuls (no Split
            copies), and the tied LM head as FusedMatMul(transB=1).
  fast-gqa  as fast, with com.microsoft GroupQueryAttention (causal, padding as a bias).
  plain     standard ONNX ops only (opset 21): explicit RMSNorm, rotate-half RoPE,
            grouped-query attention as batched MatMuls + Softmax with an additive mask,
            fused q|k|v and gate|up MatMuls, tied LM head as Gemm(transB=1).
All variants fold the 1/sqrt(head_dim) attention scale into the Q weights (exact: a power
of two for head_dim 64), compute rotary angles in the graph from position_ids (any
position value works), and store the 49152 x 576 token embedding once.
The output bytes are deterministic, so setup.py can pin their sha256.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys

import numpy as np

try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from gguf import GGUFReader
    from gguf.constants import GGMLQuantizationType, GGUFValueType
    from gguf.quants import dequantize
except ImportError as exc:  # pragma: no cover - only hit outside the venv
    sys.exit(f"convert_smollm2: missing package ({exc}); run it with the models venv python")

PRODUCER = "metarag-onnx-convert"
PRODUCER_VERSION = "1"
MASK_VALUE = -1.0e30  # finite: a fully padded query row stays finite (no NaN spreading)


class ConvertError(Exception):
    pass


# --------------------------------------------------------------------------- GGUF reading


def field_value(reader: GGUFReader, key: str, default=None):
    field = reader.fields.get(key)
    if field is None:
        return default
    return field.contents()


def read_hparams(reader: GGUFReader) -> dict:
    arch = field_value(reader, "general.architecture")
    if arch != "llama":
        raise ConvertError(f"unsupported GGUF architecture {arch!r} (expected 'llama')")

    def need(key):
        value = field_value(reader, f"{arch}.{key}")
        if value is None:
            raise ConvertError(f"GGUF metadata key {arch}.{key} is missing")
        return value

    hidden = int(need("embedding_length"))
    n_head = int(need("attention.head_count"))
    n_kv = int(field_value(reader, f"{arch}.attention.head_count_kv", n_head))
    head_dim = int(field_value(reader, f"{arch}.attention.key_length", hidden // n_head))
    rope_dim = int(field_value(reader, f"{arch}.rope.dimension_count", head_dim))
    tokens = reader.fields["tokenizer.ggml.tokens"]
    vocab = int(field_value(reader, f"{arch}.vocab_size", len(tokens.data)))
    hp = {
        "architecture": arch,
        "name": field_value(reader, "general.name", ""),
        "layers": int(need("block_count")),
        "hidden": hidden,
        "ffn": int(need("feed_forward_length")),
        "heads": n_head,
        "kv_heads": n_kv,
        "head_dim": head_dim,
        "rope_dim": rope_dim,
        "rope_theta": float(field_value(reader, f"{arch}.rope.freq_base", 10000.0)),
        "rms_eps": float(need("attention.layer_norm_rms_epsilon")),
        "vocab": vocab,
        "max_context": int(need("context_length")),
    }
    if rope_dim != head_dim:
        raise ConvertError(f"partial rotary (rope dim {rope_dim} != head dim {head_dim}) is not supported")
    if n_head % n_kv:
        raise ConvertError(f"heads {n_head} not a multiple of kv heads {n_kv}")
    if field_value(reader, f"{arch}.rope.scaling.type") not in (None, "none"):
        raise ConvertError("RoPE scaling is not supported by this converter")
    return hp


def tensor_f32(reader_tensors: dict, name: str) -> np.ndarray:
    """Dequantise one GGUF tensor to float32 in row-major (rows = output features) order."""
    t = reader_tensors.get(name)
    if t is None:
        raise ConvertError(f"GGUF tensor {name} is missing")
    qtype = GGMLQuantizationType(int(t.tensor_type))
    data = np.asarray(t.data)
    if qtype == GGMLQuantizationType.F32:
        arr = data.astype(np.float32, copy=True)
    else:
        arr = dequantize(data, qtype).astype(np.float32, copy=False)
    shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # GGUF lists ne0 (innermost) first
    return np.ascontiguousarray(arr.reshape(shape))


def unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (interleaved pairs -> rotate-half halves)."""
    out, cols = w.shape
    hd = out // n_head
    return np.ascontiguousarray(w.reshape(n_head, hd // 2, 2, cols).swapaxes(1, 2).reshape(out, cols))


def load_weights(reader: GGUFReader, hp: dict) -> dict:
    tensors = {t.name: t for t in reader.tensors}
    w = {
        "embed": tensor_f32(tensors, "token_embd.weight"),  # [vocab, hidden]
        "final_norm": tensor_f32(tensors, "output_norm.weight"),
    }
    if "output.weight" in tensors:
        raise ConvertError("GGUF has a separate output.weight; this converter expects tied embeddings")
    if w["embed"].shape != (hp["vocab"], hp["hidden"]):
        raise ConvertError(f"token_embd.weight has shape {w['embed'].shape}, expected {(hp['vocab'], hp['hidden'])}")
    scale = np.float32(1.0 / np.sqrt(hp["head_dim"]))
    layers = []
    for i in range(hp["layers"]):
        p = f"blk.{i}."
        q = unpermute_rows(tensor_f32(tensors, p + "attn_q.weight"), hp["heads"]) * scale
        k = unpermute_rows(tensor_f32(tensors, p + "attn_k.weight"), hp["kv_heads"])
        v = tensor_f32(tensors, p + "attn_v.weight")
        gate = tensor_f32(tensors, p + "ffn_gate.weight")
        up = tensor_f32(tensors, p + "ffn_up.weight")
        layers.append({  # matrices as [in, out] for MatMul
            "attn_norm": tensor_f32(tensors, p + "attn_norm.weight"),
            "q": np.ascontiguousarray(q.T),
            "k": np.ascontiguousarray(k.T),
            "v": np.ascontiguousarray(v.T),
            "o": np.ascontiguousarray(tensor_f32(tensors, p + "attn_output.weight").T),
            "ffn_norm": tensor_f32(tensors, p + "ffn_norm.weight"),
            "gate": np.ascontiguousarray(gate.T),
            "up": np.ascontiguousarray(up.T),
            "down": np.ascontiguousarray(tensor_f32(tensors, p + "ffn_down.weight").T),
        })
    w["layers"] = layers
    return w


def lora_product(b: np.ndarray, a: np.ndarray) -> np.ndarray:
    """B @ A of a LoRA pair ([out, r] @ [r, in]) with bits that do not depend on the CPU.

        >>> lora_product(np.ones((2, 1), np.float32), np.full((1, 3), 0.5, np.float32)).tolist()
        [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]

    BLAS sgemm picks its kernel at run time (SSE, AVX2, AVX-512), and the kernels sum in
    different orders, some with fused multiply-adds: on an AVX-512 machine the merged graphs
    came out with other sha256 sums than the pinned ones (computed on an AVX2 machine), and
    setup refused them. Here the product is a fixed sequence of rank-1 updates made of
    elementwise float32 multiplies and adds, each correctly rounded by IEEE 754 whatever the
    vector width, so every machine writes the same bytes.
    """
    out = np.zeros((b.shape[0], a.shape[1]), np.float32)
    for k in range(a.shape[0]):
        out += np.multiply.outer(b[:, k], a[k])
    return out


def apply_adapter(w: dict, hp: dict, path: str) -> dict:
    """Merges a LoRA adapter (onnx/train_infill.py's npz) into the weights: W' = W + scale * B @ A.

    The adapter's matrices are in the PyTorch [out, in] layout with Q/K rows already in
    rotate-half order (as unpermute_rows leaves them) and Q not yet scaled by 1/sqrt(head_dim);
    the weights here are [in, out] with Q scaled, so the delta is transposed and Q's is scaled.
    """
    try:
        z = np.load(path)
        arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise ConvertError(f"cannot read the adapter {path}: {exc}") from exc
    if "scale" not in arrays:
        raise ConvertError(f"adapter {path} has no 'scale' entry")
    scale = np.float32(arrays.pop("scale"))
    if "mask_embedding_delta" in arrays:  # masked denoisers: the mask token's trained embedding offset
        delta, mask_id = arrays.pop("mask_embedding_delta"), arrays.pop("mask_id", None)
        if mask_id is None or not 0 <= int(mask_id) < w["embed"].shape[0] or delta.shape != w["embed"][0].shape:
            raise ConvertError(f"adapter {path}: mask_embedding_delta needs a valid mask_id and shape "
                               f"{w['embed'][0].shape}")
        w["embed"] = w["embed"].copy()
        w["embed"][int(mask_id)] += delta.astype(np.float32)
    qscale = np.float32(1.0 / np.sqrt(hp["head_dim"]))
    pairs = {}
    for key in arrays:
        m = re.fullmatch(r"layers\.(\d+)\.(q|k|v|o|gate|up|down)\.lora_(a|b)", key)
        if not m:
            raise ConvertError(f"adapter {path}: unexpected entry {key!r}")
        pairs.setdefault((int(m.group(1)), m.group(2)), {})[m.group(3)] = arrays[key].astype(np.float32)
    for (layer, name), ab in sorted(pairs.items()):
        if set(ab) != {"a", "b"} or layer >= len(w["layers"]):
            raise ConvertError(f"adapter {path}: incomplete or out-of-range entry layers.{layer}.{name}")
        delta = (scale * lora_product(ab["b"], ab["a"])).T  # [in, out]
        if name == "q":
            delta = delta * qscale
        target = w["layers"][layer][name]
        if delta.shape != target.shape:
            raise ConvertError(f"adapter {path}: layers.{layer}.{name} delta {delta.shape} != weight {target.shape}")
        w["layers"][layer][name] = np.ascontiguousarray((target + delta).astype(np.float32))
    return w


# --------------------------------------------------------------------------- graph building


class Graph:
    def __init__(self):
        self.nodes = []
        self.inits = []
        self._consts = {}
        self._n = 0

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, value, dtype=np.int64) -> str:
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            self._consts[key] = self.init(f"const_{len(self._consts)}", arr)
        return self._consts[key]

    def op(self, op_type: str, inputs, outputs=1, domain: str = "", scope: str = "", **attrs):
        self._n += 1
        base = f"{scope}/{op_type}_{self._n}" if scope else f"{op_type}_{self._n}"
        if isinstance(outputs, int):
            outs = [base if outputs == 1 else f"{base}:{j}" for j in range(outputs)]
        else:
            outs = list(outputs)
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=base, domain=domain or None, **attrs))
        return outs[0] if len(outs) == 1 else outs


# Graph options of each variant (see the module docstring). Values:
#   norm     "plain" (ReduceMean/Sqrt/...) | "fused" (Simplified/SkipSimplifiedLayerNormalization)
#   rope     "plain" (Split/Concat/Mul/Add) | "contrib" (com.microsoft RotaryEmbedding)
#   attn     "plain" (MatMul/Softmax, additive mask) | "onnx" (ONNX Attention-23, additive mask)
#            | "gqa" (com.microsoft GroupQueryAttention, causal + padding bias)
#   qkv      "fused" (one MatMul, then Split) | "qk_v" (MatMul for q|k, MatMul for v) | "separate"
#   mlp      "fused" (one gate|up MatMul, then Split) | "separate" (two MatMuls)
#   lm_head  "gemm" (Gemm transB=1 on 2D) | "fused" (com.microsoft FusedMatMul transB=1 on 3D)
VARIANT_OPTIONS = {
    "plain": dict(norm="plain", rope="plain", attn="plain", qkv="fused", mlp="fused", lm_head="gemm"),
    "fast": dict(norm="fused", rope="contrib", attn="onnx", qkv="qk_v", mlp="separate", lm_head="fused"),
    # the decoder graph used beside the main one (--decoder-name): fast, with shared-prefix attention
    "prefix": dict(norm="fused", rope="contrib", attn="prefix", qkv="qk_v", mlp="separate", lm_head="fused"),
    "fast-gqa": dict(norm="fused", rope="contrib", attn="gqa", qkv="qk_v", mlp="separate", lm_head="fused"),
    # the masked-diffusion denoiser (--denoiser-name): shared-prefix attention in which the rows'
    # own tokens (the answer block) see each other whole instead of causally
    "denoiser": dict(norm="fused", rope="contrib", attn="prefix", qkv="qk_v", mlp="separate", lm_head="fused",
                     own="full"),
}
VARIANTS = tuple(v for v in VARIANT_OPTIONS if v not in ("prefix", "denoiser"))  # choices for the main graph


def build_model(hp: dict, w: dict, variant: str, overrides: dict | None = None) -> onnx.ModelProto:
    if variant not in VARIANT_OPTIONS:
        raise ConvertError(f"unknown variant {variant!r}")
    unknown = sorted(set(overrides or {}) - set(VARIANT_OPTIONS[variant]))
    if unknown:
        raise ConvertError(f"unknown graph option(s) {', '.join(unknown)}")
    opt = dict(VARIANT_OPTIONS[variant], **(overrides or {}))
    if opt["attn"] == "prefix" and opt["rope"] != "contrib":
        raise ConvertError("shared-prefix attention needs rope=contrib")
    L, H, KV, HD = hp["layers"], hp["heads"], hp["kv_heads"], hp["head_dim"]
    D, F, V = hp["hidden"], hp["ffn"], hp["vocab"]
    G = H // KV
    eps = hp["rms_eps"]
    g = Graph()
    c = g.const
    contrib = opt["norm"] == "fused" or opt["rope"] == "contrib" or opt["attn"] == "gqa" or opt["lm_head"] == "fused"

    shared = opt["attn"] == "prefix"
    own_full = opt.get("own", "causal") == "full"  # the rows' own tokens see each other whole
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])]
    if not shared:
        inputs.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total"]))
    inputs.append(helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]))
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "logits_seq", V])]
    for i in range(L):
        for kind in ("key", "value"):
            if shared:
                inputs.append(helper.make_tensor_value_info(
                    f"prefix.{i}.{kind}", TensorProto.FLOAT, [1, KV, "prefix", HD]))
            inputs.append(helper.make_tensor_value_info(
                f"past_key_values.{i}.{kind}", TensorProto.FLOAT, ["batch", KV, "past", HD]))
            outputs.append(helper.make_tensor_value_info(
                f"present.{i}.{kind}", TensorProto.FLOAT, ["batch", KV, "total", HD]))

    embed = g.init("model.embed_tokens.weight", w["embed"])

    # ---- per-forward tensors shared by all layers: sizes, mask, rotary tables
    s = "prep"
    ids_shape = g.op("Shape", ["input_ids"], scope=s)
    batch = g.op("Slice", [ids_shape, c([0]), c([1])], scope=s)                              # [1]
    seq = g.op("Slice", [ids_shape, c([1]), c([2])], scope=s)                                # [1]
    if shared:  # no attention mask: every row's own tokens are real (right padding only)
        past = g.op("Slice", [g.op("Shape", ["past_key_values.0.key"], scope=s), c([2]), c([3])], scope=s)  # [1]
        total = g.op("Add", [past, seq], scope=s)
    else:
        total = g.op("Slice", [g.op("Shape", ["attention_mask"], scope=s), c([1]), c([2])], scope=s)  # [1]
        past = g.op("Sub", [total, seq], scope=s)
    total_s = g.op("Squeeze", [total], scope=s)

    # rotary angles: position_ids[b, t] * inv_freq[j], in float32 like the reference
    # inv_freq in float64 with the C library's pow (not numpy's CPU-dispatched float32 power),
    # so the converted bytes do not depend on the CPU that converts
    inv_freq = np.array([1.0 / math.pow(hp["rope_theta"], 2.0 * j / HD) for j in range(HD // 2)],
                        np.float64).astype(np.float32)
    pos_f = g.op("Cast", ["position_ids"], to=TensorProto.FLOAT, scope=s)
    angle = g.op("Mul", [g.op("Unsqueeze", [pos_f, c([2])], scope=s), g.init("rope.inv_freq", inv_freq)], scope=s)
    cos_h = g.op("Cos", [angle], scope=s)                                                    # [B, T, HD/2]
    sin_h = g.op("Sin", [angle], scope=s)
    if opt["rope"] == "contrib":
        # RotaryEmbedding reads cos/sin rows by index: give it this forward's rows and the
        # indices 0..B*T-1, so any position value works and no max-position table is needed.
        bt = g.op("Mul", [batch, seq], scope=s)
        cache_shape = g.op("Concat", [bt, c([HD // 2])], axis=0, scope=s)
        cos_cache = g.op("Reshape", [cos_h, cache_shape], scope=s)
        sin_cache = g.op("Reshape", [sin_h, cache_shape], scope=s)
        rope_ids = g.op("Reshape", [
            g.op("Range", [c(0, np.int64), g.op("Squeeze", [bt], scope=s), c(1, np.int64)], scope=s),
            g.op("Concat", [batch, seq], axis=0, scope=s)], scope=s)
    else:
        cos = g.op("Unsqueeze", [g.op("Concat", [cos_h, cos_h], axis=-1, scope=s), c([2])], scope=s)    # [B,T,1,HD]
        sin = g.op("Unsqueeze", [g.op("Concat", [g.op("Neg", [sin_h], scope=s), sin_h], axis=-1, scope=s),
                                 c([2])], scope=s)                                                   # [-sin, sin]

    if not shared:
        pad_ok = g.op("Cast", ["attention_mask"], to=TensorProto.BOOL, scope=s)              # [B, S]
        pad_ok4 = g.op("Unsqueeze", [pad_ok, c([1, 2])], scope=s)                            # [B, 1, 1, S]
    zero, masked = c(0.0, np.float32), c(MASK_VALUE, np.float32)
    if shared and own_full:
        attn_bias = None  # nothing masked: the prefix and the row's own slots are all visible
    elif shared:
        # causal bias over the row's own slots only [G*T, S] (the shared prefix is all visible)
        q_slot = g.op("Range", [g.op("Squeeze", [past], scope=s), total_s, c(1, np.int64)], scope=s)
        k_slot = g.op("Range", [c(0, np.int64), total_s, c(1, np.int64)], scope=s)
        causal = g.op("LessOrEqual", [g.op("Unsqueeze", [k_slot, c([0])], scope=s),
                                      g.op("Unsqueeze", [q_slot, c([1])], scope=s)], scope=s)  # [T, S]
        attn_bias = g.op("Tile", [g.op("Where", [causal, zero, masked], scope=s), c([G, 1])], scope=s)
    elif opt["attn"] == "gqa":
        # padding bias [B, 1, T, S]; GroupQueryAttention applies causality itself
        attn_bias = g.op("Expand", [g.op("Where", [pad_ok4, zero, masked], scope=s),
                                    g.op("Concat", [batch, c([1]), seq, total], axis=0, scope=s)], scope=s)
        total_i32 = g.op("Cast", [total_s], to=TensorProto.INT32, scope=s)
        seqlens_k = g.op("Expand", [g.op("Sub", [total_i32, c(1, np.int32)], scope=s), batch], scope=s)
        # every query row is real (padding is in the bias): this lifts GQA's batch-size-1
        # restriction for multi-token steps on a cache
        query_seqlens = g.op("Expand", [g.op("Cast", [g.op("Squeeze", [seq], scope=s)], to=TensorProto.INT32, scope=s),
                                        batch], scope=s)
    else:
        # additive mask [B, 1, T, S]: key slot j is visible to query t iff j <= past + t and mask[b, j]
        q_slot = g.op("Range", [g.op("Squeeze", [past], scope=s), total_s, c(1, np.int64)], scope=s)
        k_slot = g.op("Range", [c(0, np.int64), total_s, c(1, np.int64)], scope=s)
        causal = g.op("LessOrEqual", [g.op("Unsqueeze", [k_slot, c([0])], scope=s),
                                      g.op("Unsqueeze", [q_slot, c([1])], scope=s)], scope=s)  # [T, S]
        attn_bias = g.op("Where", [g.op("And", [causal, pad_ok4], scope=s), zero, masked], scope=s)  # [B,1,T,S]
        if opt["attn"] == "plain":
            attn_bias = g.op("Tile", [attn_bias, c([1, 1, G, 1])], scope=s)                   # [B,1,G*T,S]

    def rms_plain(x, weight_name, scope):
        var = g.op("ReduceMean", [g.op("Mul", [x, x], scope=scope), c([-1])], keepdims=1, scope=scope)
        inv = g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [var, c(eps, np.float32)], scope=scope)], scope=scope)],
                   scope=scope)
        return g.op("Mul", [g.op("Mul", [x, inv], scope=scope), weight_name], scope=scope)

    def rope_plain(x4, scope):  # x4: [B, T, heads, HD]
        x1, x2 = g.op("Split", [x4, c([HD // 2, HD // 2])], outputs=2, axis=-1, scope=scope)
        swapped = g.op("Concat", [x2, x1], axis=-1, scope=scope)
        return g.op("Add", [g.op("Mul", [x4, cos], scope=scope), g.op("Mul", [swapped, sin], scope=scope)], scope=scope)

    def rope_contrib(x, heads, scope):  # x: [B, T, heads * HD]
        return g.op("RotaryEmbedding", [x, rope_ids, cos_cache, sin_cache], domain="com.microsoft",
                    num_heads=heads, interleaved=0, scope=scope)

    def matmul(x, name, arr, scope):
        return g.op("MatMul", [x, g.init(name, arr)], scope=scope)

    x = g.op("Gather", [embed, "input_ids"], axis=0, scope="embed")  # residual stream [B, T, D]
    normed = None
    if opt["norm"] == "fused":
        normed = g.op("SimplifiedLayerNormalization", [x, g.init("layers.0.attn_norm.weight", w["layers"][0]["attn_norm"])],
                      axis=-1, epsilon=eps, stash_type=1, scope="layers.0")
    for i, lw in enumerate(w["layers"]):
        s = f"layers.{i}"
        if opt["norm"] == "plain":
            normed = rms_plain(x, g.init(f"{s}.attn_norm.weight", lw["attn_norm"]), s)
        present_k, present_v = f"present.{i}.key", f"present.{i}.value"
        past_k, past_v = f"past_key_values.{i}.key", f"past_key_values.{i}.value"

        # q, k, v projections ([B, T, heads * HD])
        if opt["qkv"] == "fused":
            qkv = matmul(normed, f"{s}.attn.qkv.weight", np.concatenate([lw["q"], lw["k"], lw["v"]], axis=1), s)
            q, k, v = g.op("Split", [qkv, c([H * HD, KV * HD, KV * HD])], outputs=3, axis=-1, scope=s)
        elif opt["qkv"] == "qk_v":
            qk = matmul(normed, f"{s}.attn.qk.weight", np.concatenate([lw["q"], lw["k"]], axis=1), s)
            v = matmul(normed, f"{s}.attn.v.weight", lw["v"], s)
            if opt["rope"] == "contrib":
                qk = rope_contrib(qk, H + KV, s)
            q, k = g.op("Split", [qk, c([H * HD, KV * HD])], outputs=2, axis=-1, scope=s)
        else:
            q = matmul(normed, f"{s}.attn.q.weight", lw["q"], s)
            k = matmul(normed, f"{s}.attn.k.weight", lw["k"], s)
            v = matmul(normed, f"{s}.attn.v.weight", lw["v"], s)
            if opt["rope"] == "contrib":
                q, k = rope_contrib(q, H, s), rope_contrib(k, KV, s)
        if opt["rope"] == "contrib" and opt["qkv"] == "fused":
            q, k = rope_contrib(q, H, s), rope_contrib(k, KV, s)

        if opt["attn"] == "gqa":
            attn = g.op("GroupQueryAttention",
                        [q, k, v, past_k, past_v, seqlens_k, total_i32, "", "", "", attn_bias,
                         "", "", "", "", "", query_seqlens],
                        outputs=[f"{s}/attn_out", present_k, present_v], domain="com.microsoft",
                        num_heads=H, kv_num_heads=KV, scale=1.0, do_rotary=0, scope=s)[0]
        elif shared:
            # Shared-prefix attention: the prompt's keys/values ([1, KV, P, HD]) are read by
            # every row through MatMul broadcasting, never copied; only the rows' own tokens
            # are concatenated into `present`. One softmax over [prefix | own] slots.
            pre_k, pre_v = f"prefix.{i}.key", f"prefix.{i}.value"
            q = g.op("Transpose", [g.op("Reshape", [q, c([0, 0, KV, G, HD])], scope=s)], perm=[0, 2, 3, 1, 4], scope=s)
            q = g.op("Reshape", [q, c([0, KV, -1, HD])], scope=s)                               # [B,KV,G*T,HD]
            k = g.op("Transpose", [g.op("Reshape", [k, c([0, 0, KV, HD])], scope=s)], perm=[0, 2, 1, 3], scope=s)
            v = g.op("Transpose", [g.op("Reshape", [v, c([0, 0, KV, HD])], scope=s)], perm=[0, 2, 1, 3], scope=s)
            g.op("Concat", [past_k, k], outputs=[present_k], axis=2, scope=s)
            g.op("Concat", [past_v, v], outputs=[present_v], axis=2, scope=s)
            s_pre = g.op("MatMul", [q, g.op("Transpose", [pre_k], perm=[0, 1, 3, 2], scope=s)], scope=s)
            s_own = g.op("MatMul", [q, g.op("Transpose", [present_k], perm=[0, 1, 3, 2], scope=s)], scope=s)
            if attn_bias is not None:
                s_own = g.op("Add", [s_own, attn_bias], scope=s)
            probs = g.op("Softmax", [g.op("Concat", [s_pre, s_own], axis=-1, scope=s)], axis=-1, scope=s)
            n_pre = g.op("Slice", [g.op("Shape", [pre_k], scope=s), c([2]), c([3])], scope=s)
            p_pre, p_own = g.op("Split", [probs, g.op("Concat", [n_pre, total], axis=0, scope=s)], outputs=2,
                                axis=-1, scope=s)
            ctx = g.op("Add", [g.op("MatMul", [p_pre, pre_v], scope=s), g.op("MatMul", [p_own, present_v], scope=s)],
                       scope=s)                                                                # [B,KV,G*T,HD]
            ctx = g.op("Reshape", [ctx, g.op("Concat", [batch, c([KV, G]), seq, c([HD])], axis=0, scope=s)], scope=s)
            ctx = g.op("Transpose", [ctx], perm=[0, 3, 1, 2, 4], scope=s)                          # [B,T,KV,G,HD]
            attn = g.op("Reshape", [ctx, c([0, 0, H * HD])], scope=s)
        elif opt["attn"] == "onnx":
            attn = g.op("Attention", [q, k, v, attn_bias, past_k, past_v],
                        outputs=[f"{s}/attn_out", present_k, present_v],
                        q_num_heads=H, kv_num_heads=KV, scale=1.0, is_causal=0, scope=s)[0]
        else:
            q = g.op("Reshape", [q, c([0, 0, H, HD])], scope=s)
            k = g.op("Reshape", [k, c([0, 0, KV, HD])], scope=s)
            if opt["rope"] == "plain":
                q, k = rope_plain(q, s), rope_plain(k, s)
            v = g.op("Reshape", [v, c([0, 0, KV, HD])], scope=s)
            # q heads grouped by their kv head: [B, KV, G*T, HD] (q head h uses kv head h // G)
            q = g.op("Transpose", [g.op("Reshape", [q, c([0, 0, KV, G, HD])], scope=s)], perm=[0, 2, 3, 1, 4], scope=s)
            q = g.op("Reshape", [q, c([0, KV, -1, HD])], scope=s)
            k = g.op("Transpose", [k], perm=[0, 2, 1, 3], scope=s)
            v = g.op("Transpose", [v], perm=[0, 2, 1, 3], scope=s)
            g.op("Concat", [past_k, k], outputs=[present_k], axis=2, scope=s)
            g.op("Concat", [past_v, v], outputs=[present_v], axis=2, scope=s)
            scores = g.op("MatMul", [q, g.op("Transpose", [present_k], perm=[0, 1, 3, 2], scope=s)], scope=s)
            probs = g.op("Softmax", [g.op("Add", [scores, attn_bias], scope=s)], axis=-1, scope=s)
            ctx = g.op("MatMul", [probs, present_v], scope=s)                                      # [B,KV,G*T,HD]
            ctx = g.op("Reshape", [ctx, g.op("Concat", [batch, c([KV, G]), seq, c([HD])], axis=0, scope=s)], scope=s)
            ctx = g.op("Transpose", [ctx], perm=[0, 3, 1, 2, 4], scope=s)                          # [B,T,KV,G,HD]
            attn = g.op("Reshape", [ctx, c([0, 0, H * HD])], scope=s)
        o = matmul(attn, f"{s}.attn.o.weight", lw["o"], s)

        ffn_norm_w = g.init(f"{s}.ffn_norm.weight", lw["ffn_norm"])
        if opt["norm"] == "fused":
            normed, _, _, x = g.op("SkipSimplifiedLayerNormalization", [x, o, ffn_norm_w],
                                   outputs=[f"{s}/ffn_in", "", "", f"{s}/resid_attn"], domain="com.microsoft",
                                   epsilon=eps, scope=s)
        else:
            x = g.op("Add", [x, o], scope=s)
            normed = rms_plain(x, ffn_norm_w, s)
        if opt["mlp"] == "fused":
            gu = matmul(normed, f"{s}.mlp.gate_up.weight", np.concatenate([lw["gate"], lw["up"]], axis=1), s)
            gate, up = g.op("Split", [gu, c([F, F])], outputs=2, axis=-1, scope=s)
        else:
            gate = matmul(normed, f"{s}.mlp.gate.weight", lw["gate"], s)
            up = matmul(normed, f"{s}.mlp.up.weight", lw["up"], s)
        act = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate], scope=s)], scope=s), up], scope=s)  # SiLU(gate)*up
        down = matmul(act, f"{s}.mlp.down.weight", lw["down"], s)
        if opt["norm"] == "fused":
            if i + 1 < L:
                nw = g.init(f"layers.{i + 1}.attn_norm.weight", w["layers"][i + 1]["attn_norm"])
            else:
                nw = g.init("final_norm.weight", w["final_norm"])
            normed, _, _, x = g.op("SkipSimplifiedLayerNormalization", [x, down, nw],
                                   outputs=[f"{s}/next_in", "", "", f"{s}/resid_mlp"], domain="com.microsoft",
                                   epsilon=eps, scope=s)
        else:
            x = g.op("Add", [x, down], scope=s)
    if opt["norm"] == "plain":
        normed = rms_plain(x, g.init("final_norm.weight", w["final_norm"]), "final")

    s = "lm_head"  # tied weights: logits = normed @ embed^T, the embedding stored once
    # Optional input `logits_from` (default 0): logits only for positions >= logits_from.
    inputs.append(helper.make_tensor_value_info("logits_from", TensorProto.INT64, [1]))
    g.init("logits_from", np.zeros([1], dtype=np.int64))
    normed = g.op("Slice", [normed, "logits_from", c([2**62]), c([1])], scope=s)
    if opt["lm_head"] == "fused":
        g.op("FusedMatMul", [normed, embed], outputs=["logits"], domain="com.microsoft", transB=1, scope=s)
    else:
        flat = g.op("Reshape", [normed, c([-1, D])], scope=s)
        logits2 = g.op("Gemm", [flat, embed], transB=1, scope=s)
        g.op("Reshape", [logits2, g.op("Concat", [batch, c([-1]), c([V])], axis=0, scope=s)], outputs=["logits"],
             scope=s)

    graph = helper.make_graph(g.nodes, f"smollm2_{variant}", inputs, outputs, initializer=g.inits)
    onnx_opset = 23 if opt["attn"] == "onnx" else 21
    opsets = [helper.make_opsetid("", onnx_opset)]
    if contrib:
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    model = helper.make_model(graph, opset_imports=opsets, producer_name=PRODUCER, producer_version=PRODUCER_VERSION)
    model.ir_version = 11 if onnx_opset >= 23 else 10
    model.doc_string = f"{hp['name']} converted from GGUF (fp32, variant {variant})"
    for key, value in (("variant", variant), ("options", json.dumps(opt, sort_keys=True)),
                       ("architecture", hp["architecture"])):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


# --------------------------------------------------------------------------- tokenizer


def build_tokenizer(reader: GGUFReader) -> tuple[dict, dict]:
    model = field_value(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise ConvertError(f"tokenizer model {model!r} is not supported (expected byte-level BPE 'gpt2')")
    tokens = field_value(reader, "tokenizer.ggml.tokens")
    types = [int(t) for t in field_value(reader, "tokenizer.ggml.token_type")]
    merges = field_value(reader, "tokenizer.ggml.merges")
    if len(tokens) != len(types):
        raise ConvertError("tokenizer.ggml.tokens and token_type differ in length")
    for m in merges:
        if m.count(" ") != 1:
            raise ConvertError(f"merge {m!r} does not have exactly one space")
    # llama.cpp token types: 1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte
    added = []
    for idx, (tok, typ) in enumerate(zip(tokens, types)):
        if typ in (3, 4):
            added.append({
                "id": idx, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
                "normalized": typ == 4, "special": typ == 3,
            })
    tok_json = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Digits", "individual_digits": True},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            ],
        },
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {tok: idx for idx, tok in enumerate(tokens)},
            "merges": list(merges),
        },
    }
    if len(tok_json["model"]["vocab"]) != len(tokens):
        raise ConvertError("duplicate token strings in tokenizer.ggml.tokens")

    def tid(key):
        v = field_value(reader, key)
        return None if v is None else int(v)

    index = {tok: i for i, tok in enumerate(tokens)}
    special = {
        "bos": tid("tokenizer.ggml.bos_token_id"),
        "eos": tid("tokenizer.ggml.eos_token_id"),
        "pad": tid("tokenizer.ggml.padding_token_id"),
        "unk": tid("tokenizer.ggml.unknown_token_id"),
        "endoftext": index.get("<|endoftext|>"),
        "im_start": index.get("<|im_start|>"),
        "im_end": index.get("<|im_end|>"),
        "digit_1": index.get("1"),
        "digit_2": index.get("2"),
        "add_bos": bool(field_value(reader, "tokenizer.ggml.add_bos_token", False)),
        "special_tokens": {a["content"]: a["id"] for a in added if a["special"]},
    }
    return tok_json, special


# --------------------------------------------------------------------------- main


def write_bytes_atomic(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--variant", default="fast", choices=list(VARIANTS))
    ap.add_argument("--model-name", default="model.onnx")
    ap.add_argument("--decoder-name", default="",
                    help="also write the shared-prefix decoder graph (variant 'prefix') under this name")
    ap.add_argument("--denoiser-name", default="",
                    help="also write the masked-diffusion denoiser graph (variant 'denoiser') under this name")
    ap.add_argument("--adapter", help="merge this LoRA adapter (npz from onnx/train_infill.py) into the weights")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="override one graph option of the variant (experiments)")
    args = ap.parse_args(argv)

    try:
        reader = GGUFReader(args.gguf)
    except Exception as exc:
        raise ConvertError(f"cannot read GGUF {args.gguf}: {exc}") from exc
    hp = read_hparams(reader)
    tok_json, special = build_tokenizer(reader)
    weights = load_weights(reader, hp)
    if args.adapter:
        weights = apply_adapter(weights, hp, args.adapter)
    overrides = dict(o.split("=", 1) for o in args.option)
    os.makedirs(args.out_dir, exist_ok=True)
    model_path = os.path.join(args.out_dir, args.model_name)
    graphs = [(model_path, args.variant, overrides)]
    if args.decoder_name:
        graphs.append((os.path.join(args.out_dir, args.decoder_name), "prefix", {}))
    if args.denoiser_name:
        graphs.append((os.path.join(args.out_dir, args.denoiser_name), "denoiser", {}))
    for path, variant, opts in graphs:
        model = build_model(hp, weights, variant, opts)
        if not any(op.domain == "com.microsoft" or op.op_type == "SimplifiedLayerNormalization"
                   for op in model.graph.node):  # the checker does not know ONNX Runtime's contrib ops
            onnx.checker.check_model(model, full_check=False)
        write_bytes_atomic(path, model.SerializeToString(deterministic=True))
        del model
    del weights
    tok_bytes = (json.dumps(tok_json, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
    write_bytes_atomic(os.path.join(args.out_dir, "tokenizer.json"), tok_bytes)

    L, KV = hp["layers"], hp["kv_heads"]
    info = {
        "variant": args.variant,
        "hparams": hp,
        "special_tokens": special,
        "chat_template": field_value(reader, "tokenizer.chat_template", ""),
        "inputs": ["input_ids", "attention_mask", "position_ids"]
        + [f"past_key_values.{i}.{k}" for i in range(L) for k in ("key", "value")],
        "outputs": ["logits"] + [f"present.{i}.{k}" for i in range(L) for k in ("key", "value")],
    }
    write_bytes_atomic(os.path.join(args.out_dir, "convert_info.json"),
                       (json.dumps(info, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    print(f"wrote {model_path} ({os.path.getsize(model_path) / 1e6:.1f} MB, variant {args.variant}, "
          f"{L} layers, {hp['heads']}/{KV} heads)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConvertError as exc:
        print(f"convert_smollm2: error: {exc}", file=sys.stderr)
        sys.exit(1)
