#!/usr/bin/env python3
"""Build the SQuAD v1.1 dev benchmark corpus (standard library only).

    python3 onnx/squad.py [--models DIR] [--force]

Models directory: --models, else $METARAG_MODELS, else <repo>/models.

What it does (each step is skipped when its result is already there and verified):
  1. <models>/cache/bigbench-1.0.0.tar.gz: the source package bigbench 1.0.0 (358 MB), fetched
     with `pip download --no-deps --no-binary :all:` and checked against its sha256 in
     onnx/datasets.lock (a mismatch is an error). Not needed while step 2's file verifies.
  2. <models>/cache/squaddev_v1.1.json: bigbench/benchmark_tasks/squad_shifts/squaddev_v1.1.json
     unpacked from it, checked against its sha256 in onnx/datasets.lock.
  3. <models>/datasets/squad-dev/: the corpus, built in a temporary directory and renamed into
     place at the end:
       corpus/NNN-<slug>.txt  one file per article: its paragraphs' contexts joined with "\\n\\n",
                              UTF-8, byte for byte as in the source (no normalisation)
       questions.jsonl        one line per question: {"id", "question", "doc", "answers":
                              [{"text", "start", "end"}]}; start/end are UTF-8 BYTE offsets into
                              the doc, and doc_bytes[start:end] decodes to the answer text
       meta.json              counts, source, licence, sha256 and size of every file above
A second run checks meta.json and the sha256 of every corpus file (milliseconds), touches neither
the network nor the cache and prints "up to date". --force builds the corpus again.

The data: SQuAD v1.1 dev (Rajpurkar et al., 2016; CC BY-SA 4.0) as shipped in bigbench 1.0.0
(Apache-2.0). BIG-bench's copy leaves out 46 answers (listed in squaddev_v1.1_removed.json next
to it) and with them 5 questions, so it has 10,565 questions, not the original 10,570. 15 of its
answers have an answer_start one character before the text (13 of them texts with a leading
space); those are moved to the text's nearest occurrence (within a few characters) and listed in
meta.json. It carries BIG-bench's canary string: benchmark data, not for training corpora.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import tarfile
import time
import unicodedata
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from setup import SetupError, read_bytes, run, sha256_bytes, sha256_file, write_json_atomic  # noqa: E402

REPO = os.path.dirname(HERE)
SCRIPT = os.path.abspath(__file__)
LOCK_PATH = os.path.join(HERE, "datasets.lock")

PACKAGE, VERSION = "bigbench", "1.0.0"
SDIST = f"{PACKAGE}-{VERSION}.tar.gz"
MEMBER = f"{PACKAGE}-{VERSION}/bigbench/benchmark_tasks/squad_shifts/squaddev_v1.1.json"
JSON_NAME = "squaddev_v1.1.json"
OUT_REL = os.path.join("datasets", "squad-dev")
SEPARATOR = "\n\n"
SLUG_MAX = 50
MAX_SHIFT = 8  # how far (characters) a misplaced answer_start may be from its text
# What the pinned JSON holds (BIG-bench's copy of SQuAD v1.1 dev); a sanity check of this script.
EXPECTED = {"articles": 48, "paragraphs": 2067, "questions": 10565, "answers": 34680}
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
    for name in (SDIST, JSON_NAME):
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


def ensure_sdist(cache: str, lock: dict) -> str:
    """The verified bigbench sdist in <cache>; downloads it with pip when it is not there."""
    path = os.path.join(cache, SDIST)
    want = lock[SDIST]
    if os.path.isfile(path):
        got = sha256_file(path)
        if got != want:
            raise SquadError(f"{path}: sha256 {got} does not match the pinned {want} in {LOCK_PATH}; "
                             "delete the file to download it again")
        return path
    os.makedirs(cache, exist_ok=True)
    log(f"downloading the source package {PACKAGE}=={VERSION} (358 MB) with pip")
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--progress-bar", "off",
           "--no-deps", "--no-binary", ":all:", "--dest", cache, f"{PACKAGE}=={VERSION}"]
    try:
        run(cmd, f"pip download of {PACKAGE}=={VERSION}")
    except SetupError:
        # pip prepares the sdist's metadata in an isolated build environment; without one it uses
        # the setuptools of this Python instead.
        log("retrying with --no-build-isolation")
        run(cmd + ["--no-build-isolation"], f"pip download of {PACKAGE}=={VERSION} (--no-build-isolation)")
    if not os.path.isfile(path):
        raise SquadError(f"pip did not produce {path}")
    got = sha256_file(path)
    if got != want:
        os.remove(path)
        raise SquadError(f"{SDIST}: sha256 {got} does not match the pinned {want} in {LOCK_PATH}; "
                         "the file was removed")
    return path


def ensure_json(cache: str, lock: dict) -> str:
    """The verified squaddev_v1.1.json in <cache>, unpacked from the sdist when needed."""
    path = os.path.join(cache, JSON_NAME)
    want = lock[JSON_NAME]
    if os.path.isfile(path) and sha256_file(path) == want:
        return path
    sdist = ensure_sdist(cache, lock)
    log(f"unpacking {MEMBER} from {SDIST}")
    part = path + ".part"
    try:
        with tarfile.open(sdist, "r|gz") as tar:  # streamed: one pass, stops at the member
            for m in tar:
                if m.name == MEMBER and m.isfile():
                    with tar.extractfile(m) as src, open(part, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    break
            else:
                raise SquadError(f"{sdist} has no member {MEMBER}")
    except (OSError, tarfile.TarError) as exc:
        raise SquadError(f"cannot unpack {MEMBER} from {sdist}: {exc}") from exc
    got = sha256_file(part)
    if got != want:
        os.remove(part)
        raise SquadError(f"{MEMBER}: sha256 {got} does not match the pinned {want} in {LOCK_PATH}")
    os.replace(part, path)
    return path


# --------------------------------------------------------------------------- corpus


def slug(title: str) -> str:
    """ASCII letters, digits and '-', at most SLUG_MAX characters ('Sky_(United_Kingdom)' -> 'sky-united-kingdom')."""
    text = unicodedata.normalize("NFKD", urllib.parse.unquote(title)).encode("ascii", "ignore").decode()
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if len(s) > SLUG_MAX:
        s = s[:SLUG_MAX].rsplit("-", 1)[0] if "-" in s[:SLUG_MAX] else s[:SLUG_MAX]
    return s or "article"


def answer_char_start(context: str, text: str, start: int) -> int:
    """answer_start when the text is there, else the text's nearest occurrence within MAX_SHIFT."""
    if context[start:start + len(text)] == text:
        return start
    for d in range(1, MAX_SHIFT + 1):
        for s in (start + d, start - d):
            if s >= 0 and context[s:s + len(text)] == text:
                return s
    return -1


def build(src_json: str, out: str, sha_json: str, sha_sdist: str) -> dict:
    """Writes corpus/, questions.jsonl and meta.json into the (empty) directory out."""
    try:
        data = json.loads(read_bytes(src_json).decode("utf-8"))
        articles = data["data"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SquadError(f"{src_json} is not SQuAD JSON: {exc}") from exc
    corpus = os.path.join(out, "corpus")
    os.makedirs(corpus)
    counts = {"articles": 0, "paragraphs": 0, "questions": 0, "answers": 0}
    docs, shifted, files = [], [], {}
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
                    for a in qa["answers"]:
                        atext, cstart = a["text"], a["answer_start"]
                        c = answer_char_start(ctx, atext, cstart)
                        if c < 0:
                            raise SquadError(f"question {qa['id']}: answer {atext!r} is not at character "
                                             f"{cstart} of its paragraph (nor within {MAX_SHIFT} of it)")
                        if c != cstart:
                            shifted.append({"id": qa["id"], "text": atext, "answer_start": cstart, "found": c})
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
            "sdist": SDIST, "sdist_sha256": sha_sdist,
            "path": MEMBER.split("/", 1)[1], "sha256": sha_json,
            "differences": "BIG-bench's copy leaves out 46 answers (squaddev_v1.1_removed.json in the same "
                           "package) and with them 5 questions: 10,565 questions instead of 10,570",
            "canary": data.get("canary"),
        },
        "shifted_answers": shifted,
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
        if meta["source"]["sha256"] != lock[JSON_NAME]:
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
                    "package bigbench 1.0.0 (downloaded once with pip into <models>/cache/, checked against "
                    "onnx/datasets.lock). Writes corpus/NNN-<slug>.txt (one UTF-8 file per article, paragraphs "
                    "joined with a blank line), questions.jsonl (answers as UTF-8 byte offsets into those files) "
                    "and meta.json. A second run verifies the files and prints 'up to date'.",
        epilog="Licence of the data: CC BY-SA 4.0 (SQuAD v1.1, Rajpurkar et al.); bigbench itself is Apache-2.0.")
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
        sdist_sha = lock[SDIST]  # the JSON's pinned sha256 ties it to this sdist
        for name in os.listdir(parent):  # leftovers of interrupted runs
            if name.startswith((".squad-dev.tmp-", ".squad-dev.old-")):
                shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
        tmp = os.path.join(parent, f".squad-dev.tmp-{os.getpid()}")
        try:
            meta = build(src, tmp, lock[JSON_NAME], sdist_sha)
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
        if meta["shifted_answers"]:
            log(f"{len(meta['shifted_answers'])} answers had an answer_start off by a character or more; "
                "moved to their text (listed in meta.json)")
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
