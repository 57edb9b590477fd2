"""The int8 PPL scoring graph: SmoothQuant scales, then dynamic int8 MatMuls with per-token scales.

    # once, by a developer (writes the committed scales; needs the fp32 graph and token ids):
    python3 onnx/quantize.py calibrate --model models/smollm2-135m-instruct/model.onnx \
        --ids calibration.npy --out onnx/smollm2-int8-scales.npz
    # by onnx/setup.py (deterministic: same bytes on every CPU, pinned in packages.lock):
    python3 onnx/quantize.py build --model models/smollm2-135m-instruct/model.onnx \
        --scales onnx/smollm2-int8-scales.npz --out models/smollm2-135m-instruct/model-int8.onnx

What `build` does to every MatMul whose second input is a weight, and to the LM head (the
FusedMatMul on the tied embedding):

- SmoothQuant (Xiao et al. 2023): for the activation x feeding a weight MatMul, one scale per
  input channel s = max|x|^alpha / max|w|^(1-alpha) (alpha 0.5), x / s goes in and s * w is the
  weight, so the product is unchanged while the activation outliers move into the weights (the
  LM head is not smoothed: smoothing its input measured worse);
- the (scaled) weight becomes int8 with one symmetric scale per output column, 7 bits (values in
  [-63, 63]: AVX2's u8 x s8 multiply-add saturates int16 with full 8-bit weights); the LM head
  gets its own int8 copy of the transposed embedding;
- per-token activation scales for the MLP down projections and the LM head (PER_TOKEN): each
  row (token) of the MatMul's input is divided by its own max |x| and the product multiplied
  back, so DynamicQuantizeMatMul (ONNX Runtime's contrib op, which quantizes its input to uint8
  with ONE scale per tensor at run time) in effect quantizes every token with its own scale: a
  token with large activations no longer coarsens the others'. The other MatMuls read RMS-normed
  activations, where per-token scales measured no better and cost elementwise passes. The LM
  head's product is not multiplied back: its row scales leave the graph as the output
  `logit_scale` [batch, rows] (logits = logit_scale * row), which the reader folds into the
  log-sum-exp it computes anyway (crates/onnx/src/math.rs), sparing a pass over 49k logits per
  token (~5% of a window).

The per-channel activation maxima come from fp32 runs on calibration text (`calibrate`, the
example corpus, never an evaluation set) and are committed, because ONNX Runtime's fp32 results
differ in their last bits between CPUs and the graph must be the same bytes everywhere.
Measured (issue 15): 97.3% of PPL boundaries identical to fp32 on six SQuAD dev articles,
sentence-score RMS difference 0.06 nats, ~1.2x the speed of the first int8 graph (MLP down
projections and LM head fp32, one activation scale per tensor) on an AVX-512 Xeon; see
benches/reference/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
import onnx
from onnx import helper, numpy_helper

ALPHA = 0.5
WEIGHT_TOP = 63  # 7-bit weights
PER_TOKEN = ("mlp.down", "lm_head")  # MatMuls whose input gets per-token scales (see build)
KEEP_FP32 = ("mlp.down",)  # weight names the first int8 graph kept fp32 (quant_probe's *-down-fp32 variants)


def weight_matmuls(m: onnx.ModelProto) -> dict[str, list[str]]:
    """The MatMuls whose second input is a weight initializer: {activation name: [weight names]}."""
    inits = {i.name for i in m.graph.initializer}
    out: dict[str, list[str]] = {}
    for node in m.graph.node:
        if node.op_type == "MatMul" and len(node.input) > 1 and node.input[1] in inits:
            out.setdefault(node.input[0], []).append(node.input[1])
    return out


def kept_fp32(weight: str, keep=KEEP_FP32) -> bool:
    return any(k in weight for k in keep)


def session(path: str, threads: int):
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.log_severity_level = 3
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def layers_of(m: onnx.ModelProto) -> int:
    return sum(1 for i in m.graph.input if i.name.startswith("past_key_values.") and i.name.endswith(".key"))


def feed(x: np.ndarray, layers: int) -> dict:
    """One window of token ids from an empty cache (the causal-LM contract's inputs)."""
    f = {"input_ids": x[None], "attention_mask": np.ones((1, len(x)), np.int64),
         "position_ids": np.arange(len(x), dtype=np.int64)[None]}
    for i in range(layers):
        for kv in ("key", "value"):
            f[f"past_key_values.{i}.{kv}"] = np.zeros((1, 3, 0, 64), np.float32)
    return f


def activation_absmax(src: onnx.ModelProto, windows, threads: int = 2) -> dict[str, np.ndarray]:
    """Per-channel max |x| of every weight MatMul's input over the windows (fp32 graph)."""
    m = onnx.ModelProto()
    m.CopyFrom(src)
    names = list(weight_matmuls(m))
    for x in names:
        m.graph.output.append(helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None))
    layers = layers_of(src)
    top: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "calibrate.onnx")
        onnx.save(m, path)
        s = session(path, threads)
        for x in windows:
            for name, value in zip(names, s.run(names, feed(x, layers))):
                a = np.abs(value.reshape(-1, value.shape[-1])).max(0)
                top[name] = np.maximum(top[name], a) if name in top else a
        del s
    return top


def smooth_scales(src: onnx.ModelProto, absmax: dict[str, np.ndarray], alpha: float = ALPHA) -> dict[str, np.ndarray]:
    """SmoothQuant's per-input-channel scales s = max|x|^alpha / max|w|^(1-alpha): x / s and s * w
    multiply to the same product, with the activation outliers moved into the weights."""
    inits = {i.name: i for i in src.graph.initializer}
    scales = {}
    for x, weights in weight_matmuls(src).items():
        wmax = np.max([np.abs(numpy_helper.to_array(inits[w])).max(1) for w in weights], 0)
        s = np.power(np.maximum(absmax[x], 1e-5), alpha) / np.power(np.maximum(wmax, 1e-5), 1 - alpha)
        scales[x] = np.clip(s, 1e-5, None).astype(np.float64)
    return scales


def per_column_int8(w: np.ndarray, top: int):
    """Symmetric int8 weights, one scale per output column: (q in [-top, top], scale)."""
    w = w.astype(np.float64)
    scale = np.abs(w).max(0) / top
    scale[scale == 0] = 1.0
    return np.rint(w / scale).clip(-top, top).astype(np.int8), scale


def dynamic_node(node: onnx.NodeProto, w: np.ndarray, top: int):
    """DynamicQuantizeMatMul in place of `node` (weight `w` [K, N]): the node and its initializers."""
    name = node.input[1]
    q, scale = per_column_int8(w, top)
    inits = [numpy_helper.from_array(q, name + ".q"), numpy_helper.from_array(scale.astype(np.float32), name + ".s"),
             numpy_helper.from_array(np.zeros(w.shape[1], np.int8), name + ".z")]
    new = helper.make_node("DynamicQuantizeMatMul", [node.input[0], name + ".q", name + ".s", name + ".z"],
                           list(node.output), name=node.name, domain="com.microsoft")
    return new, inits


def replace_graph(m: onnx.ModelProto, nodes: list, drop: set, extra: list) -> None:
    """Puts `nodes` in place of `m`'s nodes and `extra` after its initializers, less `drop`'s."""
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    kept = [i for i in m.graph.initializer if i.name not in drop]
    del m.graph.initializer[:]
    m.graph.initializer.extend(kept + extra)


def smooth_int8(src: onnx.ModelProto, scales: dict[str, np.ndarray] | None, top: int = WEIGHT_TOP,
                keep=KEEP_FP32) -> onnx.ModelProto:
    """`src` with every weight MatMul (but `keep`'s) as DynamicQuantizeMatMul, its input divided by
    `scales` first (one Mul per distinct input); `scales` None quantizes without smoothing."""
    m = onnx.ModelProto()
    m.CopyFrom(src)
    inits = {i.name: i for i in m.graph.initializer}
    nodes, drop, extra, done = [], set(), [], set()
    for node in m.graph.node:
        weight = node.input[1] if node.op_type == "MatMul" and len(node.input) > 1 else None
        if weight not in inits or kept_fp32(weight, keep):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[weight]).astype(np.float64)
        scaled = onnx.NodeProto()
        scaled.CopyFrom(node)
        if scales is not None:
            x = node.input[0]
            if x not in scales:
                raise ValueError(f"no smoothing scale for the input {x!r} of {weight!r} (scales from another graph?)")
            s = np.asarray(scales[x], np.float64)
            if s.shape != (w.shape[0],):
                raise ValueError(f"smoothing scale of {x!r} has shape {s.shape}, the weight {weight!r} {w.shape}")
            if x not in done:
                extra.append(numpy_helper.from_array((1.0 / s).astype(np.float32), x + ".inv_s"))
                nodes.append(helper.make_node("Mul", [x, x + ".inv_s"], [x + ".smooth"]))
                done.add(x)
            scaled.input[0] = x + ".smooth"
            w = w * s[:, None]
        new, more = dynamic_node(scaled, w.astype(np.float32), top)
        nodes.append(new)
        extra += more
        drop.add(weight)
    replace_graph(m, nodes, drop, extra)
    if not any(o.domain == "com.microsoft" for o in m.opset_import):
        m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return m


def int8_lm_head(m: onnx.ModelProto, top: int = WEIGHT_TOP) -> None:
    """The LM head (FusedMatMul x @ E^T on the tied embedding E, which the input Gather also
    reads) as a DynamicQuantizeMatMul over an int8 copy of E^T, in place."""
    inits = {i.name: i for i in m.graph.initializer}
    heads = [i for i, n in enumerate(m.graph.node) if n.op_type == "FusedMatMul" and n.input[1] in inits
             and [(a.name, a.i) for a in n.attribute] == [("transB", 1)]]
    if len(heads) != 1:
        raise ValueError(f"expected one LM head (FusedMatMul x @ E^T, transB only), found {len(heads)}")
    head = m.graph.node[heads[0]]
    emb = numpy_helper.to_array(inits[head.input[1]])
    plain = helper.make_node("MatMul", [head.input[0], "lm_head.weight"], list(head.output), name=head.name)
    new, extra = dynamic_node(plain, np.ascontiguousarray(emb.T), top)
    head.CopyFrom(new)
    m.graph.initializer.extend(extra)


def per_token_scales(m: onnx.ModelProto, weights=PER_TOKEN, scale_output: str | None = "logit_scale") -> None:
    """The input of every DynamicQuantizeMatMul whose weight name contains one of `weights`
    divided by its own rows' max |x| (one Div per distinct input) and its output multiplied back:
    one activation scale per token instead of per tensor. A product that is the graph's
    `logits` output keeps its name unscaled and its row scales become the output `scale_output`
    ([batch, rows]) unless that is None. In place."""
    nodes, normed = [], {}
    outputs = {o.name for o in m.graph.output}
    for node in m.graph.node:
        if node.op_type != "DynamicQuantizeMatMul" or not any(w in node.input[1] for w in weights):
            nodes.append(node)
            continue
        x = node.input[0]
        if x not in normed:
            absolute, top, row_max, xn = x + ".abs", x + ".abs_max", x + ".row_max", x + ".per_token"
            nodes += [helper.make_node("Abs", [x], [absolute]),
                      helper.make_node("ReduceMax", [absolute, "per_token.axes"], [top], keepdims=1),
                      helper.make_node("Max", [top, "per_token.eps"], [row_max]),
                      helper.make_node("Div", [x, row_max], [xn])]
            normed[x] = (xn, row_max)
        xn, row_max = normed[x]
        scaled = onnx.NodeProto()
        scaled.CopyFrom(node)
        scaled.input[0] = xn
        if scale_output and node.output[0] == "logits" and "logits" in outputs:
            nodes += [scaled, helper.make_node("Squeeze", [row_max, "per_token.axes"], [scale_output])]
            m.graph.output.append(helper.make_tensor_value_info(scale_output, onnx.TensorProto.FLOAT,
                                                                ["batch", "rows"]))
            continue
        scaled.output[0] = node.output[0] + ".per_token"
        nodes += [scaled, helper.make_node("Mul", [scaled.output[0], row_max], [node.output[0]])]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    m.graph.initializer.extend([numpy_helper.from_array(np.array([-1], np.int64), "per_token.axes"),
                                numpy_helper.from_array(np.array(1e-6, np.float32), "per_token.eps")])


def build(src: onnx.ModelProto, scales: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The shipped int8 scoring graph: every weight MatMul smoothed and int8, the LM head int8,
    per-token activation scales throughout."""
    m = smooth_int8(src, scales, keep=())
    int8_lm_head(m)
    per_token_scales(m)
    return m


def load_scales(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k].astype(np.float64) for k in z.files}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("calibrate", help="per-channel smoothing scales from fp32 runs on calibration token ids")
    c.add_argument("--model", required=True, help="the fp32 scoring graph (models/smollm2-135m-instruct/model.onnx)")
    c.add_argument("--ids", required=True, help=".npy of int64 token ids of the calibration text")
    c.add_argument("--window", type=int, default=256)
    c.add_argument("--alpha", type=float, default=ALPHA)
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--out", required=True, help="where the scales go (.npz)")
    b = sub.add_parser("build", help="the int8 graph from the fp32 graph and committed scales")
    b.add_argument("--model", required=True)
    b.add_argument("--scales", required=True)
    b.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    src = onnx.load(args.model)
    if args.cmd == "calibrate":
        ids = np.load(args.ids).astype(np.int64)
        windows = [ids[w:w + args.window] for w in range(0, len(ids) - args.window + 1, args.window)]
        if not windows:
            sys.exit(f"quantize: {args.ids} has {len(ids)} tokens, fewer than one window of {args.window}")
        scales = smooth_scales(src, activation_absmax(src, windows, args.threads), args.alpha)
        np.savez_compressed(args.out, **{x: s.astype(np.float32) for x, s in scales.items()})
        print(f"quantize: {len(scales)} smoothing scales from {len(windows)} windows -> {args.out}")
        return 0
    m = build(src, load_scales(args.scales))
    tmp = args.out + ".partial"
    onnx.save(m, tmp)
    os.replace(tmp, args.out)
    print(f"quantize: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
