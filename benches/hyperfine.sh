#!/usr/bin/env bash
# Whole-command timing of `metarag chunk` on the example corpus, with the model-free sentence
# chunker as the baseline in the same hyperfine invocation (so the ratios are what count).
# Installs hyperfine from Debian if missing. Usage: benches/hyperfine.sh [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine >/dev/null; }
python3 onnx/setup.py >/dev/null
cargo build --release -q
bin=target/release/metarag
mkdir -p target/bench
hyperfine --warmup 1 --runs 3 --export-markdown target/bench/chunk.md --export-json target/bench/chunk.json \
  -n "sentence (no model)" "$bin chunk examples/corpus --method sentence -q --threads $threads" \
  -n "ppl" "$bin chunk examples/corpus --method ppl -q --threads $threads" \
  -n "margin (washington-1790.txt)" "$bin chunk examples/corpus/washington-1790.txt --method margin -q --threads $threads"
cat target/bench/chunk.md
# Several documents at once: one LM session shared by the document threads (baseline) vs one
# session per document in flight (the default), same files, same invocation.
two="examples/corpus/washington-1790.txt examples/corpus/debian-faq-next-release.md"
hyperfine --warmup 1 --runs 3 --export-markdown target/bench/sessions.md --export-json target/bench/sessions.json \
  -n "ppl, 1 LM session" "$bin chunk examples/corpus --method ppl -q --threads $threads --lm-sessions 1" \
  -n "ppl, $threads LM sessions" "$bin chunk examples/corpus --method ppl -q --threads $threads" \
  -n "margin 2 files, 1 LM session" "$bin chunk $two --method margin -q --threads $threads --lm-sessions 1" \
  -n "margin 2 files, $threads LM sessions" "$bin chunk $two --method margin -q --threads $threads"
cat target/bench/sessions.md
