#!/usr/bin/env bash
# Ingest throughput per stage (load, split, chunk, embed, write: MB/s and tokens/s) and peak
# memory, for the default pipeline (PPL chunks) against a baseline in the same invocation:
# the same files with the sentence chunker (no language model).
#
#   benches/ingest.sh [PATHS...]        (default: examples/corpus)
#
# Stage seconds are summed over worker threads (documents are chunked in parallel), so they
# can exceed the wall time. Peak memory is the maximum resident set size (GNU time).
set -euo pipefail
cd "$(dirname "$0")/.."
paths=("${@:-examples/corpus}")
command -v /usr/bin/time >/dev/null || { apt-get install -y time >/dev/null; }
cargo build --release --quiet
bin=target/release/metarag
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '[chunker]\nmethod = "sentence"\n\n[merge]\ntarget = 120\nunit = "words"\n' > "$tmp/sentence.toml"

run() { # name, extra args...
  local name=$1; shift
  /usr/bin/time -f '%M %e' -o "$tmp/$name.time" "$bin" ingest "${paths[@]}" --index "$tmp/$name" --json -q "$@" > "$tmp/$name.json"
  python3 - "$name" "$tmp/$name.json" "$tmp/$name.time" <<'PY'
import json, sys
name, rep, tm = sys.argv[1], json.load(open(sys.argv[2])), open(sys.argv[3]).read().split()
r = rep["report"]; st = r["stages"]
tokens = st["load"]["tokens"]
print(f"== {name}: {r['ingested']} files, {r['chunks']} chunks, {tokens} tokens; wall {float(tm[1]):.2f} s, peak RSS {int(tm[0])/1024:.0f} MiB")
for k in ["load", "split", "chunk", "embed", "write"]:
    s = st[k]; sec = max(s["seconds"], 1e-9)
    mbps = s["bytes"] / 1e6 / sec
    tps = (tokens / sec) if tokens else 0
    print(f"   {k:>6}: {s['seconds']:8.3f} s  {mbps:10.2f} MB/s  {tps:12.0f} tok/s")
PY
}
run sentence-baseline --pipeline "$tmp/sentence.toml"
run default-ppl
