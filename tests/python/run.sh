#!/usr/bin/env bash
# Tests of the Python package: maturin builds the wheel of crates/python (release profile, in the
# workspace's target directory, so the dependencies compiled by `cargo test --release` are
# reused and only the extension itself is built), pip installs it into a virtual environment of
# tests/python/requirements.txt (pins and sha256, made once under <models>/tools/py-venv, again
# when the pins change), and pytest runs tests/python/test_package.py against the real models.
#
#   tests/python/run.sh [PYTEST_ARGS...]
#
# Part of the README's test command (after `cargo test --release --workspace`, whose metarag
# binary the tests compare with).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
VENV="${METARAG_MODELS:-$root/models}/tools/py-venv"
want=$(sha256sum tests/python/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$VENV/.metarag-requirements" 2>/dev/null)" != "$want" ]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --disable-pip-version-check --progress-bar off -q --require-hashes \
        -r tests/python/requirements.txt
    echo "$want" > "$VENV/.metarag-requirements"
fi
wheels="$root/target/wheels"
rm -f "$wheels"/metarag-*.whl
echo "building the Python wheel (maturin, release)" >&2
"$VENV/bin/maturin" build --release --quiet --features testing -m crates/python/Cargo.toml -i "$VENV/bin/python" -o "$wheels" >&2
"$VENV/bin/pip" install --disable-pip-version-check -q --no-deps --force-reinstall "$wheels"/metarag-*.whl
METARAG_BIN="$root/target/release/metarag" "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
    tests/python/test_package.py "$@"
