"""Build a SYNTHETIC masked denoiser: an ONNX graph with fixed, deterministic weights that
follows the masked-denoiser contract of DESIGN.md, for testing masked-diffusion decoding
end to end through ONNX Runtime. It is NOT a trained model: it predicts one known sentence
in the answer slot of a SmolLM2 chat prompt, whatever the question.

Runs inside the models virtual environment (needs `onnx`, `numpy`; `onnxruntime` for the
check); `setup.py` starts it with that environment's interpreter:

    python synthetic_denoiser.py --models-dir DIR [--force] [--check]

Outputs in DIR/synthetic-denoiser/ (written atomically; a rerun builds the graph in memory,
compares sha256 with the files on disk and writes nothing when they match):
  model.onnx      the graph (about 4.5 MiB: a [K, V] float32 table)
  denoiser.json   {"contract": "masked-denoiser", "mask_id", "vocab", "tokenizer", ...}

Graph contract: inputs input_ids int64 [batch, seq] (containing the mask id) and
attention_mask int64 [batch, seq]; output logits f32 [batch, seq, 49152]. No time input.

What the graph computes, for row b and position t:
  p       = position of the LAST <|im_start|> (id 1) in the row (attention_mask 1 only);
  rel     = t - p - SLOT_OFFSET, clipped to [0, K-1]; the slot starts right after
            "<|im_start|>assistant\\n" (SLOT_OFFSET tokens, counted with the tokenizer);
  logits  = TABLE[rel] + BOOST * onehot(TARGET[rel]) * (input_ids[b, t-1] != mask).
TABLE row j puts MARGIN0 - MARGIN_STEP * j on TARGET[j] (token j of the sentence, then
<|im_end|>), -20 on the mask token, and a fixed pseudo-random background in [-0.5, 0.5)
elsewhere (an integer hash: bit-exact on every machine). The margin decreases with j, so
confidence orders positions left to right; the boost makes a position confident once its
left neighbour is unmasked, so threshold decoding commits a confident run at the first
step and then follows the committed frontier. With threshold 0.9 and a 16-token slot that
takes 11 forwards (checked below).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys

import numpy as np

try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError as exc:  # pragma: no cover - only hit outside the venv
    sys.exit(f"synthetic_denoiser: missing package ({exc}); run it with the models venv python")

OUT_DIR = "synthetic-denoiser"
TOKENIZER_REL = os.path.join("smollm2-135m-instruct", "tokenizer.json")
SENTENCE = " This answer was written by a synthetic masked denoiser with fixed weights."
SLOT_START = "<|im_start|>assistant\n"
VOCAB = 49152
MASK_ID = 16  # <empty_output>: unused by the chat model
IM_START = 1
IM_END = 2
K = 24  # table rows: sentence tokens, then <|im_end|>
MARGIN0 = 14.4
MARGIN_STEP = 0.25
BOOST = 4.0
MASK_LOGIT = -20.0
PRODUCER = "metarag-synthetic-denoiser"
PRODUCER_VERSION = "1"
NOTE = "synthetic, fixed weights, not a trained model"


class BuildError(Exception):
    pass


# --------------------------------------------------------------------------- tokenizer

def _byte_chars() -> dict:
    """The byte-level BPE alphabet: printable bytes map to themselves, the rest above 255."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


class MiniBpe:
    """Enough of the SmolLM2 tokenizer (byte-level BPE, single digits, special tokens) to
    encode the fixed ASCII texts used here; refuses anything else."""

    WORDS = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+")

    def __init__(self, path: str):
        try:
            with open(path, encoding="utf-8") as f:
                tok = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            raise BuildError(f"cannot read the tokenizer {path}: {exc}") from exc
        model = tok.get("model", {})
        if model.get("type") != "BPE" or model.get("ignore_merges"):
            raise BuildError(f"{path}: expected a byte-level BPE tokenizer without ignore_merges")
        self.vocab = model["vocab"]
        merges = [m.split(" ") if isinstance(m, str) else m for m in model["merges"]]
        self.ranks = {tuple(m): i for i, m in enumerate(merges)}
        self.specials = {a["content"]: a["id"] for a in tok.get("added_tokens", []) if a.get("special")}
        self.chars = _byte_chars()
        self.path = path

    def _word(self, word: str) -> list:
        syms = [self.chars[b] for b in word.encode("utf-8")]
        while len(syms) > 1:
            rank, i = min((self.ranks.get(pair, sys.maxsize), i) for i, pair in enumerate(zip(syms, syms[1:])))
            if rank == sys.maxsize:
                break
            syms = syms[:i] + [syms[i] + syms[i + 1]] + syms[i + 2:]
        try:
            return [self.vocab[s] for s in syms]
        except KeyError as exc:
            raise BuildError(f"{self.path}: no vocabulary entry {exc}") from exc

    def encode(self, text: str) -> list:
        if not text.isascii():
            raise BuildError("the mini tokenizer only handles ASCII text")
        ids = []
        pattern = "(" + "|".join(re.escape(s) for s in sorted(self.specials, key=len, reverse=True)) + ")"
        for part in re.split(pattern, text):
            if part in self.specials:
                ids.append(self.specials[part])
                continue
            for piece in re.split(r"([0-9])", part):
                for word in self.WORDS.findall(piece):
                    ids += self._word(word)
        return ids


# --------------------------------------------------------------------------- graph

def targets(sentence_ids: list) -> np.ndarray:
    if len(sentence_ids) >= K:
        raise BuildError(f"the sentence has {len(sentence_ids)} tokens; the table holds {K - 1} and <|im_end|>")
    return np.array(sentence_ids + [IM_END] * (K - len(sentence_ids)), dtype=np.int64)


def table(target: np.ndarray) -> np.ndarray:
    """[K, V] logits: a bit-exact integer-hash background, the margin on the target, -20 on
    the mask token."""
    v = np.arange(VOCAB, dtype=np.uint64)
    rows = []
    for j in range(K):
        h = (v * np.uint64(2654435761) + np.uint64((j + 1) * 97531)) % np.uint64(1 << 32)
        row = ((h >> np.uint64(16)).astype(np.float64) / 65536.0 - 0.5).astype(np.float32)
        row[MASK_ID] = MASK_LOGIT
        row[target[j]] = MARGIN0 - MARGIN_STEP * j
        rows.append(row)
    return np.stack(rows)


def build_model(target: np.ndarray, slot_offset: int) -> onnx.ModelProto:
    def const(name, value, dtype=np.int64):
        return numpy_helper.from_array(np.array(value, dtype=dtype), name)

    inits = [
        numpy_helper.from_array(table(target), "table"),
        numpy_helper.from_array(target, "targets"),
        const("zero", 0), const("one", 1), const("im_start", IM_START),
        const("mask_id", MASK_ID), const("offset_minus_one", slot_offset - 1),
        const("rel_min", 0), const("rel_max", K - 1), const("depth", VOCAB),
        const("onehot_values", [0.0, 1.0], np.float32), const("boost", BOOST, np.float32),
        const("left_pads", [0, 1, 0, 0]), const("slice_start", [0]), const("slice_end", [-1]),
        const("axis_1", [1]),
    ]
    n = helper.make_node
    nodes = [
        # t = 0..T-1
        n("Shape", ["input_ids"], ["shape"]),
        n("Gather", ["shape", "one"], ["seq_len"], axis=0),
        n("Range", ["zero", "seq_len", "one"], ["t"]),
        n("Add", ["t", "one"], ["t_plus_one"]),
        # p + 1 = max over t of (t + 1) * [id == <|im_start|>] * attention_mask (0: none)
        n("Equal", ["input_ids", "im_start"], ["is_start_bool"]),
        n("Cast", ["is_start_bool"], ["is_start"], to=TensorProto.INT64),
        n("Mul", ["is_start", "attention_mask"], ["is_start_kept"]),
        n("Mul", ["is_start_kept", "t_plus_one"], ["start_marks"]),
        n("ReduceMax", ["start_marks"], ["p_plus_one"], axes=[1], keepdims=1),
        # rel = t - p - offset = t - (p + 1) - (offset - 1), clipped to [0, K-1]
        n("Sub", ["t", "p_plus_one"], ["t_minus_p1"]),
        n("Sub", ["t_minus_p1", "offset_minus_one"], ["rel_raw"]),
        n("Max", ["rel_raw", "rel_min"], ["rel_low"]),
        n("Min", ["rel_low", "rel_max"], ["rel"]),
        n("Gather", ["table", "rel"], ["base"], axis=0),
        # boost on the target when the left neighbour is not a mask (position 0: a mask pad)
        n("Pad", ["input_ids", "left_pads", "mask_id"], ["padded"], mode="constant"),
        n("Slice", ["padded", "slice_start", "slice_end", "axis_1"], ["left"]),
        n("Equal", ["left", "mask_id"], ["left_masked"]),
        n("Not", ["left_masked"], ["left_known_bool"]),
        n("Cast", ["left_known_bool"], ["left_known"], to=TensorProto.FLOAT),
        n("Mul", ["left_known", "boost"], ["boost_2d"]),
        n("Unsqueeze", ["boost_2d", "axis_2"], ["boost_3d"]),
        n("Gather", ["targets", "rel"], ["target"], axis=0),
        n("OneHot", ["target", "depth", "onehot_values"], ["target_onehot"], axis=-1),
        n("Mul", ["target_onehot", "boost_3d"], ["bonus"]),
        n("Add", ["base", "bonus"], ["logits"]),
    ]
    inits.append(const("axis_2", [2]))
    graph = helper.make_graph(
        nodes,
        "synthetic_masked_denoiser",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", VOCAB])],
        initializer=inits,
    )
    graph.doc_string = f"SYNTHETIC masked denoiser ({NOTE}); predicts: {SENTENCE!r}"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name=PRODUCER, producer_version=PRODUCER_VERSION)
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def outputs(models: str) -> dict:
    """The files to write, relative to the models directory, with their bytes."""
    tok = MiniBpe(os.path.join(models, TOKENIZER_REL))
    header = tok.encode(SLOT_START)
    if header[:1] != [IM_START]:
        raise BuildError(f"{SLOT_START!r} does not start with <|im_start|>: {header}")
    sentence = tok.encode(SENTENCE)
    target = targets(sentence)
    model = build_model(target, len(header)).SerializeToString(deterministic=True)
    info = {
        "contract": "masked-denoiser",
        "mask_id": MASK_ID,
        "vocab": VOCAB,
        "tokenizer": "../" + TOKENIZER_REL.replace(os.sep, "/"),
        "sequence": SENTENCE,
        "tokens": sentence,
        "stop": IM_END,
        "slot_start": SLOT_START,
        "slot_offset": len(header),
        "inputs": ["input_ids", "attention_mask"],
        "outputs": ["logits"],
        "model_sha256": hashlib.sha256(model).hexdigest(),
        "note": NOTE,
    }
    text = (json.dumps(info, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    return {os.path.join(OUT_DIR, "model.onnx"): model, os.path.join(OUT_DIR, "denoiser.json"): text}


def sha256_path(path: str):
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except FileNotFoundError:
        return None


def write_atomic(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------- check

def check(models: str, path: str) -> None:
    """Runs the graph at `path` with ONNX Runtime: the slot's argmax is the sentence, the last
    <|im_start|> decides the slot, and threshold decoding (0.9) takes the documented steps."""
    import onnxruntime as ort

    tok = MiniBpe(os.path.join(models, TOKENIZER_REL))
    sentence = tok.encode(SENTENCE)
    want = (sentence + [IM_END] * K)[:16]
    prompt = tok.encode("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                        "<|im_start|>user\nWho wrote this?<|im_end|>\n" + SLOT_START)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

    def run(rows):
        ids = np.array(rows, dtype=np.int64)
        return sess.run(["logits"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]

    # Two rows: a fully masked slot, and one with the first half filled in.
    rows = [prompt + [MASK_ID] * 16, prompt + want[:8] + [MASK_ID] * 8]
    logits = run(rows)
    if logits.shape != (2, len(prompt) + 16, VOCAB) or logits.dtype != np.float32:
        raise BuildError(f"{path}: logits shape {logits.shape} {logits.dtype}")
    slot = logits[:, len(prompt):, :]
    if not (slot.argmax(-1) == np.array(want)).all():
        raise BuildError(f"{path}: slot argmax {slot.argmax(-1).tolist()} is not {want}")
    # Threshold decoding (top-1 plus every position with p >= 0.9) on one row.
    row, forwards, per_step = prompt + [MASK_ID] * 16, 0, []
    while MASK_ID in row[len(prompt):]:
        l64 = run([row])[0, len(prompt):, :].astype(np.float64)
        p = np.exp(l64 - l64.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        masked = [i for i in range(16) if row[len(prompt) + i] == MASK_ID]
        conf = {i: p[i].max() for i in masked}
        best = max(masked, key=lambda i: conf[i])
        commit = [i for i in masked if conf[i] >= 0.9 or i == best]
        for i in commit:
            row[len(prompt) + i] = int(p[i].argmax())
        forwards += 1
        per_step.append(len(commit))
    if row[len(prompt):] != want or forwards != 11:
        raise BuildError(f"{path}: threshold decoding gave {row[len(prompt):]} in {forwards} forwards "
                         f"({per_step}); expected {want} in 11")
    print(f"synthetic_denoiser: checked with onnxruntime {ort.__version__}: slot = sentence, "
          f"threshold 0.9 commits {per_step} ({forwards} forwards)", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Build the synthetic masked denoiser (fixed weights).")
    ap.add_argument("--models-dir", required=True)
    ap.add_argument("--force", action="store_true", help="write the files even when they match")
    ap.add_argument("--check", action="store_true", help="run the onnxruntime check even when nothing was written")
    args = ap.parse_args(argv)
    models = os.path.abspath(args.models_dir)
    files = outputs(models)
    stale = [rel for rel, data in files.items()
             if args.force or sha256_path(os.path.join(models, rel)) != hashlib.sha256(data).hexdigest()]
    model_rel = os.path.join(OUT_DIR, "model.onnx")
    model_path = os.path.join(models, model_rel)
    if model_rel in stale:
        # Check the new graph before it replaces anything.
        fresh = model_path + ".new"
        write_atomic(fresh, files[model_rel])
        try:
            check(models, fresh)
        except BaseException:
            os.remove(fresh)
            raise
        os.replace(fresh, model_path)
    elif args.check:
        check(models, model_path)
    for rel in stale:
        if rel != model_rel:
            write_atomic(os.path.join(models, rel), files[rel])
    status = "wrote " + ", ".join(stale) if stale else "up to date"
    print(f"synthetic_denoiser: {status} ({model_rel}: {len(files[model_rel])} bytes, "
          f"sha256 {hashlib.sha256(files[model_rel]).hexdigest()})", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BuildError as exc:
        print(f"synthetic_denoiser: error: {exc}", file=sys.stderr)
        sys.exit(1)
