#!/usr/bin/env bash
# HTTP tests of `metarag serve` (tests/http/test_serve.py: pytest, then schemathesis against
# /openapi.json) in a virtual environment of tests/http/requirements.txt (pins and sha256), made once
# under <models>/tools/http-venv (again when the pins change).
#
#   tests/http/run.sh METARAG_BIN INDEX_DIR [PYTEST_ARGS...]
#
# The Rust test `serve::http_tests_and_schemathesis` runs it with the built binary and an index
# of examples/corpus.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 METARAG_BIN INDEX_DIR [PYTEST_ARGS...]" >&2; exit 2; }
bin=$(realpath "$1") index=$(realpath "$2")
shift 2
cd "$(dirname "$0")"
VENV="${METARAG_MODELS:-$(cd ../.. && pwd)/models}/tools/http-venv"
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$VENV/.metarag-requirements" 2>/dev/null)" != "$want" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --disable-pip-version-check --progress-bar off -q --require-hashes -r requirements.txt
    echo "$want" > "$VENV/.metarag-requirements"
fi
cd ../..   # paths in the index are relative to the checkout
METARAG_BIN="$bin" METARAG_TEST_INDEX="$index" "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
    tests/http/test_serve.py "$@"
