"""Lower-precision variants of the SmolLM2 scoring graph, timed against fp32 in one process.

    benches/reference/quant_probe.sh [--threads N] [--window T] [--repeats R]

Issue 15, item 2 asks for a faster PPL graph that keeps the boundaries. This probe answers the
first half on the machine it runs on: it rewrites every weight MatMul of
`models/smollm2-135m-instruct/model.onnx` (the graph `metarag chunk --method ppl` runs) into
one of ONNX Runtime's quantized operators, feeds each variant the same `--window`-token windows
of a SQuAD dev article (from an empty cache, as the first window of a document), and prints:

- tok/s and the ratio to fp32 (median of `--repeats` timed windows per variant, same process,
  same thread count);
- how far the per-token NLLs move from fp32 over the first 2,048 tokens: the mean shift, the
  RMS and the largest difference (nats). The PPL chunker cuts at minima of per-sentence mean
  NLLs, so a variant that moves tokens by tenths of a nat cannot keep 95% of the boundaries.

The variants (K = input features, blocks of 32 along K):

- `nbits4-exact`: MatMulNBits, 4 bits, float zero points. The GGUF stores these weights as
  Q4_1 (per block: scale d, minimum m, q in 0..15), so `d * (q - (-m/d))` is the fp32 graph's
  weight exactly; `accuracy_level` 0 computes in fp32 from the packed weights.
- `nbits4-int8`: the same grid with integer zero points (what MLAS's int8 kernels take:
  `-m/d` rounded, so no longer exact), int8 activations per block (`accuracy_level` 4).
- `nbits8-int8`: MatMulNBits, 8 bits, asymmetric per block, int8 activations per block.
- `dyn-s8`, `dyn-s7`: DynamicQuantizeMatMul (ORT's fusion of dynamic int8): uint8 activations
  with one scale per tensor, int8 weights per output channel, full range (s8) or 7 bits (s7:
  avoids the int16 saturation of AVX2's `vpmaddubsw`).
- `dyn-s7-down-fp32`: `dyn-s7` with the MLP down projections (the outlier-prone input) in fp32.
- `row-s7`, `row-s7-down-fp32`: as the two above with one activation scale per token (row)
  instead of per tensor, written out as ONNX ops (absmax per row, round, MatMulInteger with
  zero point 128, rescale by row and column), each distinct input quantized once.

- `smooth-*`: SmoothQuant scales (from `--calibration`) before `dyn-*`.
- `smooth-s7-pt`: what `onnx/quantize.py build` ships: `smooth-s7` with the LM head in int8 too
  and one activation scale per token for the MLP down projections and the LM head (each row
  divided by its max |x| before DynamicQuantizeMatMul, multiplied back after).

The LM head (the tied embedding) stays fp32 in every variant but `smooth-s7-pt`. Runs in the models venv (onnx,
onnxruntime, numpy); the token ids come from `--ids` (quant_probe.sh writes them with the
SmolLM2 tokenizer.json). Variants are written to a temporary folder and deleted.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "onnx"))
from quantize import (KEEP_FP32, activation_absmax, build, feed, kept_fp32, per_column_int8,  # noqa: E402
                      replace_graph, session, smooth_int8, smooth_scales)

BLOCK = 32
VARIANTS = ["fp32", "nbits4-exact", "nbits4-int8", "nbits8-int8", "dyn-s8", "dyn-s7", "dyn-s7-down-fp32", "row-s7",
            "row-s7-down-fp32", "smooth-s7", "smooth-s7-down-fp32", "smooth-s8", "smooth-s7-pt"]


def q4_grid(w: np.ndarray):
    """W [K, N] on a Q4_1 grid -> (q [N, K/32, 32] in 0..15, d [N, K/32], m [N, K/32])."""
    k, n = w.shape
    wt = w.T.reshape(n, k // BLOCK, BLOCK).astype(np.float64)
    lo, hi = wt.min(-1), wt.max(-1)
    d = (hi - lo) / 15.0
    d[d == 0] = 1.0
    q = np.rint((wt - lo[..., None]) / d[..., None]).clip(0, 15)
    return q.astype(np.uint8), d, lo


def pack4(q: np.ndarray) -> np.ndarray:
    """Two 4-bit values per byte, the even index in the low nibble (MatMulNBits' layout)."""
    return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)


def nbits_node(node, w, variant):
    k, n = w.shape
    name = node.input[1]
    if variant == "nbits8-int8":
        wt = w.T.reshape(n, k // BLOCK, BLOCK).astype(np.float64)
        lo, hi = np.minimum(wt.min(-1), 0), np.maximum(wt.max(-1), 0)
        d = (hi - lo) / 255.0
        d[d == 0] = 1.0
        z = np.rint(-lo / d).clip(0, 255)
        q = np.rint(wt / d[..., None] + z[..., None]).clip(0, 255).astype(np.uint8)
        packed, zp, bits, level = q, z.astype(np.uint8).reshape(-1), 8, 4
    else:
        q, d, lo = q4_grid(w)
        packed, bits = pack4(q), 4
        if variant == "nbits4-exact":
            zp, level = (-lo / d).astype(np.float32).reshape(-1), 0
        else:
            z = np.rint(-lo / d).clip(0, 15).astype(np.uint8)
            if z.shape[1] % 2:
                z = np.concatenate([z, np.zeros((n, 1), np.uint8)], 1)
            zp, level = pack4(z).reshape(-1), 4
    inits = [numpy_helper.from_array(packed, name + ".q"), numpy_helper.from_array(d.astype(np.float32).reshape(-1), name + ".s"),
             numpy_helper.from_array(zp, name + ".z")]
    new = helper.make_node("MatMulNBits", [node.input[0], name + ".q", name + ".s", name + ".z"], list(node.output),
                           name=node.name, domain="com.microsoft", K=k, N=n, bits=bits, block_size=BLOCK,
                           accuracy_level=level)
    return new, inits


def row_nodes(node, w, cache, nodes):
    """Per-row symmetric uint8 activations (zero point 128) x int8 weights (7 bits per column)."""
    x, name = node.input[0], node.input[1]
    if x not in cache:
        t = x + ".rowq"
        nodes += [helper.make_node("Abs", [x], [t + ".abs"]),
                  helper.make_node("ReduceMax", [t + ".abs", "rowq.axes"], [t + ".max"], keepdims=1),
                  helper.make_node("Max", [t + ".max", "rowq.eps"], [t + ".max1"]),
                  helper.make_node("Div", [t + ".max1", "rowq.127"], [t + ".scale"]),
                  helper.make_node("Div", [x, t + ".scale"], [t + ".div"]),
                  helper.make_node("Round", [t + ".div"], [t + ".round"]),
                  helper.make_node("Add", [t + ".round", "rowq.128"], [t + ".shift"]),
                  helper.make_node("Cast", [t + ".shift"], [t + ".u8"], to=onnx.TensorProto.UINT8)]
        cache[x] = (t + ".u8", t + ".scale")
    xq, xs = cache[x]
    q, scale = per_column_int8(w, 63)
    inits = [numpy_helper.from_array(q, name + ".q"), numpy_helper.from_array(scale.astype(np.float32), name + ".s")]
    o = node.output[0]
    nodes += [helper.make_node("MatMulInteger", [xq, name + ".q", "rowq.zp"], [o + ".i32"]),
              helper.make_node("Cast", [o + ".i32"], [o + ".f"], to=onnx.TensorProto.FLOAT),
              helper.make_node("Mul", [o + ".f", xs], [o + ".row"]),
              helper.make_node("Mul", [o + ".row", name + ".s"], [o], name=node.name)]
    return inits


ROW_CONSTANTS = [numpy_helper.from_array(np.array([-1], np.int64), "rowq.axes"),
                 numpy_helper.from_array(np.array(1e-8, np.float32), "rowq.eps"),
                 numpy_helper.from_array(np.array(127.0, np.float32), "rowq.127"),
                 numpy_helper.from_array(np.array(128.0, np.float32), "rowq.128"),
                 numpy_helper.from_array(np.array(128, np.uint8), "rowq.zp")]


def make_variant(src: onnx.ModelProto, variant: str, scales: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    if variant == "smooth-s7-pt":
        return build(src, scales)
    if variant.startswith(("dyn", "smooth")):
        # onnx/quantize.py's weight rewrite, smoothed or not (smooth-s7-down-fp32 was the first shipped graph)
        top = 127 if variant.endswith("s8") else 63
        keep = KEEP_FP32 if variant.endswith("down-fp32") else ()
        return smooth_int8(src, scales if variant.startswith("smooth") else None, top, keep)
    m = onnx.ModelProto()
    m.CopyFrom(src)
    inits = {i.name: i for i in m.graph.initializer}
    nodes, drop, extra, cache = [], set(), [], {}
    for node in m.graph.node:
        weight = node.input[1] if node.op_type == "MatMul" and len(node.input) > 1 else None
        skip = variant.endswith("down-fp32") and weight is not None and kept_fp32(weight)
        if weight not in inits or skip:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[weight])
        if variant.startswith("row"):
            extra += row_nodes(node, w, cache, nodes)
        else:
            new, more = nbits_node(node, w, variant)
            nodes.append(new)
            extra += more
        drop.add(weight)
    replace_graph(m, nodes, drop, extra + (ROW_CONSTANTS if variant.startswith("row") else []))
    return m


def token_nll(s: ort.InferenceSession, x: np.ndarray, layers: int) -> np.ndarray:
    names = [o.name for o in s.get_outputs()]
    wanted = ["logits"] + (["logit_scale"] if "logit_scale" in names else [])
    out = s.run(wanted, feed(x, layers))
    logits = out[0][0].astype(np.float64)
    if len(out) > 1:  # the shipped graph leaves the LM head's row scales to the reader
        logits *= out[1][0][:, None]
    top = logits.max(-1)
    lse = np.log(np.exp(logits - top[:, None]).sum(-1)) + top
    return lse[:-1] - logits[np.arange(len(x) - 1), x[1:]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="models/smollm2-135m-instruct/model.onnx")
    ap.add_argument("--ids", required=True, help=".npy of int64 token ids (at least 4 windows)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--calibration", help=".npy of int64 token ids of another text: the smooth variants' "
                    "activation maxima (default: the evaluated text's windows after the first 2,048 tokens)")
    ap.add_argument("--alpha", type=float, default=0.5, help="SmoothQuant's migration strength (default 0.5)")
    args = ap.parse_args()
    ids = np.load(args.ids).astype(np.int64)
    t = args.window
    if len(ids) < 4 * t:
        sys.exit(f"quant_probe: {args.ids} has {len(ids)} tokens, need 4 windows of {t}")
    src = onnx.load(args.model)
    layers = sum(1 for i in src.graph.input if i.name.startswith("past_key_values.") and i.name.endswith(".key"))
    quality = [ids[w:w + t] for w in range(0, min(len(ids), 2048) - t + 1, t)]
    flags = sorted({f for f in open("/proc/cpuinfo").read().split() if f.startswith(("avx512", "avx_vnni", "amx", "avx2"))})
    model_name = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), platform.processor())
    print(f"CPU: {model_name}; flags: {' '.join(flags)}; onnxruntime {ort.__version__}; "
          f"{args.threads} threads; windows of {t} tokens from an empty cache")
    print(f"{'variant':18s} {'tok/s':>7s} {'vs fp32':>7s} {'mean dNLL':>9s} {'rms dNLL':>8s} {'max |dNLL|':>10s}")
    base_nll = base_speed = None
    calib = np.load(args.calibration).astype(np.int64) if args.calibration else ids[2048:]
    calib_windows = [calib[w:w + t] for w in range(0, len(calib) - t + 1, t)]
    scales = None
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants.split(","):
            if variant not in VARIANTS:
                sys.exit(f"quant_probe: unknown variant {variant!r} (one of {', '.join(VARIANTS)})")
            path = args.model
            if variant != "fp32":
                path = os.path.join(tmp, variant + ".onnx")
                if variant.startswith("smooth") and scales is None:
                    if not calib_windows:
                        sys.exit(f"quant_probe: no calibration window of {t} tokens")
                    scales = smooth_scales(src, activation_absmax(src, calib_windows, args.threads), args.alpha)
                    print(f"(smooth: alpha {args.alpha}, {len(calib_windows)} calibration windows)", flush=True)
                onnx.save(make_variant(src, variant, scales), path)
            s = session(path, args.threads)
            nll = np.concatenate([token_nll(s, x, layers) for x in quality])
            times = []
            for r in range(args.repeats):
                x = ids[t * (r % 4): t * (r % 4) + t]
                start = time.perf_counter()
                token_nll(s, x, layers)
                times.append(time.perf_counter() - start)
            speed = t / statistics.median(times)
            if base_nll is None:
                base_nll, base_speed = nll, speed
            d = nll - base_nll
            print(f"{variant:18s} {speed:7.0f} {speed / base_speed:7.2f} {d.mean():+9.4f} {np.sqrt((d * d).mean()):8.4f} "
                  f"{np.abs(d).max():10.3f}", flush=True)
            del s
            if path != args.model:
                os.remove(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
