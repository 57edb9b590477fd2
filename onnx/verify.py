"""Check the converted causal LM against the committed oracle and measure its speed.

Runs inside the models virtual environment (needs `onnxruntime` and `numpy`; uses
`tokenizers` when installed to also check token ids):

    python verify.py --model-dir DIR [--oracle model_oracle.json] [--embedder-dir DIR]
                     [--bench] [--threads 2] [--compare OTHER_DIR]

Checks (exit status 1 when one fails):
  * token ids of the oracle texts (only with the `tokenizers` package; skipped otherwise);
  * mean NLL of each oracle text within --tol (1e-3) of the oracle;
  * per-sentence mean NLL of `sentence_scores` within --tol;
  * KV-cache incremental scoring (prefix, then the rest with the cache) equals one-shot scoring,
    and a left-padded and a right-padded batch equal the unpadded runs (within 1e-4);
  * with --compare: the other model's NLLs agree with this one's within 1e-4;
  * with --embedder-dir: the embedder's tensor names and width, and (with `tokenizers`)
    cosine >= 0.99 with the oracle's sentence embeddings.
With --bench it also prints tokens/s for a 512-token forward on an empty cache and
256-token forwards on 512 and 1536 cached tokens (batch 1, --threads intra-op threads).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

try:
    import onnxruntime as ort
except ImportError as exc:  # pragma: no cover
    sys.exit(f"verify: missing package ({exc}); run it with the models venv python")

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ORACLE = os.path.join(os.path.dirname(HERE), "tests", "fixtures", "model_oracle.json")
CONSISTENCY_TOL = 1e-4


def byte_decoder() -> dict:
    """Inverse of the GPT-2 byte-to-unicode table used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


class Lm:
    def __init__(self, model_dir: str, threads: int):
        path = os.path.join(model_dir, "model.onnx")
        if not os.path.isfile(path):
            raise SystemExit(f"verify: {path} does not exist")
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        t0 = time.perf_counter()
        self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.load_s = time.perf_counter() - t0
        self.past_names = [i.name for i in self.sess.get_inputs() if i.name.startswith("past_key_values.")]
        shape = next(i.shape for i in self.sess.get_inputs() if i.name == "past_key_values.0.key")
        self.kv_heads, self.head_dim = int(shape[1]), int(shape[3])
        self.out_names = [o.name for o in self.sess.get_outputs()]

    def empty_past(self, batch: int) -> dict:
        z = np.zeros((batch, self.kv_heads, 0, self.head_dim), np.float32)
        return {n: z for n in self.past_names}

    def forward(self, ids, mask=None, pos=None, past=None):
        ids = np.asarray(ids, np.int64)
        if ids.ndim == 1:
            ids = ids[None, :]
        b, t = ids.shape
        past = past if past is not None else self.empty_past(b)
        p = past[self.past_names[0]].shape[2]
        if mask is None:
            mask = np.ones((b, p + t), np.int64)
        if pos is None:
            pos = np.broadcast_to(np.arange(p, p + t, dtype=np.int64), (b, t)).copy()
        feeds = {"input_ids": ids, "attention_mask": np.asarray(mask, np.int64), "position_ids": np.asarray(pos, np.int64)}
        feeds.update(past)
        outs = self.sess.run(None, feeds)
        res = dict(zip(self.out_names, outs))
        present = {n: res[n.replace("past_key_values.", "present.")] for n in self.past_names}
        return res["logits"], present


def token_nll(logits: np.ndarray, ids) -> np.ndarray:
    """nll[i] = -log p(ids[i+1] | ids[..=i]) from logits [T, V] (float64 log-softmax)."""
    lg = logits[:-1].astype(np.float64)
    m = lg.max(axis=-1, keepdims=True)
    lse = (m + np.log(np.exp(lg - m).sum(axis=-1, keepdims=True)))[:, 0]
    tgt = np.asarray(ids[1:], np.int64)
    return lse - lg[np.arange(len(tgt)), tgt]


def check_consistency(lm: Lm, texts: dict) -> list:
    """Incremental KV-cache scoring and padded batches must match one-shot scoring."""
    rows = []
    names = list(texts)
    for name in names:
        ids = texts[name]["token_ids"]
        full, _ = lm.forward(ids)
        ref = token_nll(full[0], ids)
        cut = len(ids) // 3
        l1, past = lm.forward(ids[:cut])
        l2, past = lm.forward(ids[cut:cut + 5], past=past)
        l3, _ = lm.forward(ids[cut + 5:], past=past)
        inc = token_nll(np.concatenate([l1[0], l2[0], l3[0]]), ids)
        rows.append((f"kv-cache {name}", float(np.abs(inc - ref).max())))
    # batches of two texts of different length, left and right padded
    a, b = texts[names[0]]["token_ids"], texts[names[1]]["token_ids"]
    n = max(len(a), len(b))
    for side in ("left", "right"):
        ids = np.full((2, n), 2, np.int64)
        mask = np.zeros((2, n), np.int64)
        pos = np.zeros((2, n), np.int64)
        spans = []
        for r, seq in enumerate((a, b)):
            off = n - len(seq) if side == "left" else 0
            ids[r, off:off + len(seq)] = seq
            mask[r, off:off + len(seq)] = 1
            pos[r, off:off + len(seq)] = np.arange(len(seq))
            spans.append((off, seq))
        # a first chunk, a second chunk on the cache (padding inside the past), then three
        # single-token steps (batched decoding)
        cuts = [0, n // 2, n - 3, n - 2, n - 1, n]
        past, parts = None, []
        for lo, hi in zip(cuts, cuts[1:]):
            lg, past = lm.forward(ids[:, lo:hi], mask[:, :hi], pos[:, lo:hi], past=past)
            parts.append(lg)
        logits = np.concatenate(parts, axis=1)
        worst = 0.0
        for r, (off, seq) in enumerate(spans):
            single, _ = lm.forward(seq)
            got = token_nll(logits[r, off:off + len(seq)], seq)
            worst = max(worst, float(np.abs(got - token_nll(single[0], seq)).max()))
        if not np.isfinite(logits).all():
            worst = float("inf")
        rows.append((f"{side}-padded batch", worst))
    return rows


def check_decoder(lm: Lm, path: str, texts: dict, threads: int) -> list:
    """The shared-prefix decoder graph: a prompt's cache as `prefix.*`, three rows continuing it
    (two tokens, then the rest of the text) must give the one-shot NLLs of the main graph."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    dec = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in dec.get_outputs()]
    rows = []
    for name, t in texts.items():
        ids = t["token_ids"]
        full, _ = lm.forward(ids)
        ref = token_nll(full[0], ids)
        cut = len(ids) // 2
        l1, past = lm.forward(ids[:cut])
        prefix = {n.replace("past_key_values.", "prefix."): v for n, v in past.items()}
        rest = np.asarray(ids[cut:], np.int64)
        parts, own = [], lm.empty_past(3)
        for lo, hi in ((0, 2), (2, len(rest))):
            step = np.broadcast_to(rest[lo:hi], (3, hi - lo)).copy()
            pos = np.broadcast_to(np.arange(cut + lo, cut + hi, dtype=np.int64), (3, hi - lo)).copy()
            res = dict(zip(out_names, dec.run(None, {"input_ids": step, "position_ids": pos, **prefix, **own})))
            own = {n: res[n.replace("past_key_values.", "present.")] for n in lm.past_names}
            parts.append(res["logits"])
        logits = np.concatenate(parts, axis=1)
        worst = 0.0
        for r in range(3):
            got = token_nll(np.concatenate([l1[0], logits[r]]), ids)
            worst = max(worst, float(np.abs(got - ref).max()))
        rows.append((f"decoder {name}", worst))
    return rows


def check_embedder(emb_dir: str, oracle: dict, Tokenizer, threads: int) -> list:
    """Tensor names and width of the embedder; cosine with the oracle vectors when possible."""
    path = os.path.join(emb_dir, "model.onnx")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = sorted(i.name for i in sess.get_inputs())
    out = sess.get_outputs()[0]
    problems = []
    if names != ["attention_mask", "input_ids", "token_type_ids"]:
        problems.append(f"embedder inputs {names}")
    if out.name != "last_hidden_state" or out.shape[-1] != 384:
        problems.append(f"embedder output {out.name} {out.shape}")
    want = oracle.get("embeddings")
    if Tokenizer is None or not want:
        ids = np.array([[101, 7592, 2088, 102]], np.int64)
        hs = sess.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": np.ones_like(ids),
                                              "token_type_ids": np.zeros_like(ids)})[0]
        ok = hs.shape == (1, 4, 384) and np.isfinite(hs).all()
        print(f"embedder: names OK, smoke run {'OK' if ok else 'FAILED'} (cosine check needs `tokenizers`)")
        return problems + ([] if ok else ["embedder smoke run"])
    tk = Tokenizer.from_file(os.path.join(emb_dir, "tokenizer.json"))
    tk.no_padding()
    tk.enable_truncation(256)
    encs = tk.encode_batch(want["sentences"])
    n = max(len(e.ids) for e in encs)
    ids = np.zeros((len(encs), n), np.int64)
    mask = np.zeros((len(encs), n), np.int64)
    for r, e in enumerate(encs):
        ids[r, :len(e.ids)] = e.ids
        mask[r, :len(e.ids)] = 1
    hs = sess.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
    m = mask[:, :, None].astype(np.float32)
    vec = (hs * m).sum(1) / m.sum(1)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    ref = np.asarray(want["vectors"], np.float64)
    cos = (vec * ref).sum(1) / np.linalg.norm(ref, axis=1)
    print("embedder: cosine with the oracle " + " ".join(f"{c:.4f}" for c in cos))
    if cos.min() < 0.99:
        problems.append(f"embedder cosine {cos.min():.4f} < 0.99")
    return problems


def sentence_bounds(tok_path: str, sentences: list, ids: list) -> list:
    """Token index ranges of each sentence, from byte lengths (no tokenizer package needed)."""
    with open(tok_path, encoding="utf-8") as f:
        vocab = json.load(f)["model"]["vocab"]
    inv = {i: t for t, i in vocab.items()}
    dec = byte_decoder()
    ends, acc = [], 0
    for s in sentences:
        acc += len(s.encode("utf-8"))
        ends.append(acc)
    bounds, start, pos, k = [], 0, 0, 0
    for i, t in enumerate(ids):
        pos += len(bytes(dec[ch] for ch in inv[t]))
        if pos == ends[k]:
            bounds.append((start, i + 1))
            start, k = i + 1, k + 1
            if k == len(ends):
                break
    if len(bounds) != len(sentences):
        raise SystemExit("verify: sentence_scores token ids do not align with the sentence texts")
    return bounds


def bench(lm: Lm, reps: int) -> list:
    rng = np.random.default_rng(0)
    rows = []
    for t, p in ((512, 0), (256, 512), (256, 1536)):
        ids = rng.integers(100, 40000, size=(1, t), dtype=np.int64)
        past = {n: rng.standard_normal((1, lm.kv_heads, p, lm.head_dim), dtype=np.float32) for n in lm.past_names}
        lm.forward(ids, past=past)  # warm-up
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            lm.forward(ids, past=past)
            times.append(time.perf_counter() - t0)
        best, med = min(times), float(np.median(times))
        rows.append((t, p, med, t / med, t / best))
    return rows


def check_cache_paths(lm: Lm, model_dir: str, texts: dict, threads: int) -> list:
    """KV-cache, padded-batch and shared-prefix-decoder scoring against one-shot scoring, printed;
    the labels of the failed checks."""
    rows = check_consistency(lm, texts)
    decoder = os.path.join(model_dir, "decoder.onnx")
    if os.path.isfile(decoder):
        rows += check_decoder(lm, decoder, texts, threads)
    else:
        print("decoder: no decoder.onnx in the model directory (skipped)")
    failures = []
    for label, worst in rows:
        ok = worst <= CONSISTENCY_TOL
        print(f"{label:<20} max |dNLL| vs one-shot {worst:.2e} {'OK' if ok else 'FAIL'}")
        if not ok:
            failures.append(label)
    return failures


def verify_infill(args) -> int:
    """The merged infill model: per-token NLL of the fixture's FIM prompts + answers (PyTorch, merged LoRA)
    within --tol, the KV-cache paths and the shared-prefix decoder against one-shot scoring."""
    with open(args.infill_fixture, encoding="utf-8") as f:
        fixture = json.load(f)
    lm = Lm(args.model_dir, args.threads)
    failures = []
    texts = {}
    for case in fixture["cases"]:
        ids = case["token_ids"]
        logits, _ = lm.forward(ids)
        nll = token_nll(logits[0], ids)
        worst = float(np.abs(nll - np.array(case["nll"], dtype=np.float64)).max())
        ans = float(nll[case["answer_start"] - 1:].mean())
        ok = worst <= args.tol
        print(f"infill {case['id']}: {len(ids)} tokens, answer NLL {ans:.4f}, max |dNLL| vs PyTorch {worst:.2e} "
              f"{'OK' if ok else 'FAIL'}")
        if not ok:
            failures.append(f"infill fixture {case['id']}")
        texts[case["id"]] = {"token_ids": ids}
    failures += check_cache_paths(lm, args.model_dir, texts, args.threads)
    if failures:
        print("verify: FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    print("verify: all infill checks passed")
    return 0


def verify_masked(args) -> int:
    """The merged masked-diffusion denoiser: the prompt's cache from model.onnx, then denoiser.onnx
    on [last prompt token] + a half-masked block, three rows over one shared cache: per block
    position the clean token's NLL within --tol of the training framework's."""
    with open(args.masked_fixture, encoding="utf-8") as f:
        fixture = json.load(f)
    lm = Lm(args.model_dir, args.threads)
    path = os.path.join(args.model_dir, "denoiser.onnx")
    if not os.path.isfile(path):
        raise SystemExit(f"verify: {path} does not exist")
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    den = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in den.get_outputs()]
    failures = []
    for case in fixture["cases"]:
        _, past = lm.forward(case["prompt_ids"][:-1])
        prefix = {n.replace("past_key_values.", "prefix."): v for n, v in past.items()}
        row = np.asarray(case["row_ids"], np.int64)
        n = len(row)
        ids = np.broadcast_to(row, (3, n)).copy()
        pos = np.broadcast_to(np.arange(case["first_position"], case["first_position"] + n, dtype=np.int64), (3, n)).copy()
        res = dict(zip(out_names, den.run(None, {"input_ids": ids, "position_ids": pos, **prefix, **lm.empty_past(3)})))
        lg = res["logits"].astype(np.float64)  # [3, n, V]
        m = lg.max(axis=-1, keepdims=True)
        logp = lg - (m + np.log(np.exp(lg - m).sum(axis=-1, keepdims=True)))
        tgt = np.asarray(case["block_target"], np.int64)
        nll = -logp[:, np.arange(len(tgt)), tgt]  # [3, block]
        worst = float(np.abs(nll - np.array(case["nll"])[None]).max())
        ok = worst <= args.tol
        print(f"masked {case['id']}: prompt {len(case['prompt_ids'])} tokens, block {len(tgt)}, mean NLL "
              f"{nll[0].mean():.4f}, max |dNLL| vs PyTorch over 3 rows {worst:.2e} {'OK' if ok else 'FAIL'}")
        if not ok:
            failures.append(f"masked fixture {case['id']}")
    if failures:
        print("verify: FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    print("verify: all masked checks passed")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="verify the converted causal LM")
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--oracle", default=DEFAULT_ORACLE)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bench", action="store_true", help="also measure tokens/s")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--embedder-dir", help="also check the sentence embedder in this directory")
    ap.add_argument("--compare", help="another converted model dir whose NLLs must agree within 1e-4")
    ap.add_argument("--infill-fixture",
                    help="check a model with a merged adapter against the training framework's per-token NLLs "
                         "(tests/fixtures/infill_oracle.json) instead of the base model's oracle")
    ap.add_argument("--masked-fixture",
                    help="check a merged masked-diffusion denoiser (model.onnx + denoiser.onnx) against the training "
                         "framework (tests/fixtures/masked_oracle.json)")
    args = ap.parse_args(argv)
    if args.infill_fixture:
        return verify_infill(args)
    if args.masked_fixture:
        return verify_masked(args)

    with open(args.oracle, encoding="utf-8") as f:
        oracle = json.load(f)
    texts = oracle["texts"]
    tok_path = os.path.join(args.model_dir, "tokenizer.json")
    failures = []

    # token ids
    try:
        from tokenizers import Tokenizer
    except ImportError:
        Tokenizer = None
    if Tokenizer is None:
        print("tokenizer ids: skipped (the `tokenizers` package is not installed in this environment)")
    else:
        tk = Tokenizer.from_file(tok_path)
        bad = [n for n, t in texts.items() if tk.encode(t["text"], add_special_tokens=False).ids != t["token_ids"]]
        sent = oracle["sentence_scores"]
        joined = [i for s in sent["sentences"] for i in tk.encode(s, add_special_tokens=False).ids]
        if joined != sent["token_ids"]:
            bad.append("sentence_scores")
        enc = tk.encode("<|im_start|>user\nHi<|im_end|>", add_special_tokens=False).ids
        if enc[0] != 1 or enc[-1] != 2:
            bad.append("special tokens")
        print(f"tokenizer ids: {'OK' if not bad else 'MISMATCH ' + ', '.join(bad)} "
              f"({len(texts)} texts, sentence pieces, chat markers)")
        if bad:
            failures.append("tokenizer ids")

    lm = Lm(args.model_dir, args.threads)
    other = Lm(args.compare, args.threads) if args.compare else None
    print(f"session load: {lm.load_s:.2f} s")
    print(f"{'text':<10} {'tokens':>6} {'mean NLL':>10} {'oracle':>10} {'diff':>9}" + (f" {'vs other':>9}" if other else ""))
    for name, t in texts.items():
        ids = t["token_ids"]
        logits, _ = lm.forward(ids)
        nll = token_nll(logits[0], ids)
        mean = float(nll.mean())
        diff = abs(mean - t["mean_nll"])
        line = f"{name:<10} {len(ids):>6} {mean:>10.6f} {t['mean_nll']:>10.6f} {diff:>9.2e}"
        if diff > args.tol:
            failures.append(f"mean NLL {name}")
        if other:
            o_logits, _ = other.forward(ids)
            d = float(np.abs(token_nll(o_logits[0], ids) - nll).max())
            line += f" {d:>9.2e}"
            if d > CONSISTENCY_TOL:
                failures.append(f"variant agreement {name}")
        print(line)

    sent = oracle["sentence_scores"]
    ids = sent["token_ids"]
    logits, _ = lm.forward(ids)
    nll = token_nll(logits[0], ids)  # nll[i] scores token i+1
    for k, (a, b) in enumerate(sentence_bounds(tok_path, sent["sentences"], ids)):
        got = float(nll[max(a, 1) - 1:b - 1].mean())
        want = sent["mean_nll_per_sentence"][k]
        ok = abs(got - want) <= args.tol
        print(f"sentence {k}: tokens {a:>2}..{b:<2} mean NLL {got:.6f} oracle {want:.6f} diff {abs(got - want):.2e}")
        if not ok:
            failures.append(f"sentence score {k}")

    failures += check_cache_paths(lm, args.model_dir, texts, args.threads)

    if args.embedder_dir:
        failures += check_embedder(args.embedder_dir, oracle, Tokenizer, args.threads)

    if args.bench:
        for name, m in (("model", lm),) + ((("other", other),) if other else ()):
            for t, p, med, tps, tps_best in bench(m, args.reps):
                print(f"bench {name}: T={t:<4} past={p:<5} {med * 1000:8.1f} ms  {tps:6.1f} tok/s (best {tps_best:6.1f})")

    if failures:
        print("verify: FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    print("verify: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
