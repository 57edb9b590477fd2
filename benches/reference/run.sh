#!/usr/bin/env bash
# Side by side with the reference implementations (not part of CI): Meta-Chunking's own code
# (PyPI lmchunker, PPL and margin chunking on SmolLM2-135M-Instruct read by transformers from the
# same GGUF that metarag converts) and chonkie's SemanticChunker (all-MiniLM-L6-v2), timed in one
# run against `metarag chunk` on the same texts, with boundary agreement. Writes
# target/bench/reference.json and target/bench/reference.md. See benches/reference/README.md.
#
#   benches/reference/run.sh [--threads N] [--repeats N] [--methods ppl,ppl-int8,semantic,margin,margin-cached]
#                            [--texts FILE...]
#
# The texts are SQuAD v1.1 dev articles (onnx/squad.py fetches them): the first alone, and the
# first three joined; --texts takes other files instead (any format metarag loads; the first alone,
# all of them joined). The reference side lives in <models>/tools/reference-venv (pins and sha256 in
# benches/reference/requirements.txt), made once and again when the pins change.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
MODELS="${METARAG_MODELS:-$root/models}"
VENV="$MODELS/tools/reference-venv"
REQ=benches/reference/requirements.txt

python3 onnx/setup.py >/dev/null
cargo build --release -q
case " $* " in
    *" --texts "*) ;;
    *) python3 onnx/squad.py >/dev/null || {
           echo "run.sh: no SQuAD dev corpus (onnx/squad.py failed); --texts FILE... compares on other texts" >&2
           exit 1
       } ;;
esac

want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ "$(cat "$VENV/.metarag-requirements" 2>/dev/null)" != "$want" ]; then
    echo "making $VENV (torch and its CUDA runtime wheels: ~3 GB, a few minutes)" >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    pip=("$VENV/bin/pip" install --disable-pip-version-check --progress-bar off -q --require-hashes --no-deps)
    # The pinned setuptools first: jieba is an sdist, built below without build isolation so that
    # pip fetches no unpinned build backend.
    grep '^setuptools==' "$REQ" > "$VENV/build-requirements.txt"
    "${pip[@]}" -r "$VENV/build-requirements.txt"
    "${pip[@]}" --no-build-isolation -r "$REQ"
    echo "$want" > "$VENV/.metarag-requirements"
fi

# Offline: every model is read from <models>; nothing may reach for a hub.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1
"$VENV/bin/python" benches/reference/compare.py --models "$MODELS" --bin target/release/metarag "$@"
