#!/usr/bin/env bash
# Load on `metarag serve`: POST /search (hybrid, k=10) against the 100,000-chunk synthetic
# index of benches/retrieval.rs, from wrk on loopback at concurrency 1, 8 and 32 (20 s each):
# requests/s, p50 and p99. The library's own latency for such queries is what
# `cargo bench --bench retrieval` prints (hybrid search + the query embedder, 1 thread), run in
# the same invocation so the ratio is what counts. Installs wrk from Debian if missing.
# Usage: benches/serve.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q
METARAG_BENCH_BUILD_ONLY=1 cargo bench -q --bench retrieval >/dev/null
index=target/bench-data/retrieval-100k
mkdir -p target/bench
log=target/bench/serve.log
./target/release/metarag serve --index "$index" --addr 127.0.0.1:0 --threads 1 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "listening on" "$log" && break; sleep 0.2; done
url=$(grep -o 'http://[0-9.:]*' "$log" | head -1)
# 64 queries of 3-6 words of the index's syllable vocabulary, in turn
cat > target/bench/search.lua <<'LUA'
local syll = {"ka", "lo", "mi", "ne", "tu", "ra", "so", "vi", "de", "po"}
local bodies = {}
math.randomseed(42)
for i = 1, 64 do
  local words = {}
  for j = 1, 3 + (i % 4) do
    local r, w = math.floor(20000 ^ math.random()), ""
    while r > 0 do w = w .. syll[r % 10 + 1]; r = math.floor(r / 10) end
    words[#words + 1] = w
  end
  bodies[i] = '{"query": "' .. table.concat(words, " ") .. '", "k": 10, "mode": "hybrid"}'
end
local n = 0
request = function()
  n = n % #bodies + 1
  return wrk.format("POST", "/search", {["Content-Type"] = "application/json"}, bodies[n])
end
LUA
echo "| concurrency | requests/s | p50 | p99 | non-2xx |" > target/bench/serve.md
echo "|---|---|---|---|---|" >> target/bench/serve.md
for c in 1 8 32; do
  out=$(wrk -t $(( c < 2 ? 1 : 2 )) -c "$c" -d "${secs}s" --latency -s target/bench/search.lua "$url")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  bad=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  echo "| $c | $rps | $p50 | $p99 | ${bad:-0} |" >> target/bench/serve.md
done
kill $server; wait $server 2>/dev/null || true
cat target/bench/serve.md
echo "library, same machine and invocation (hybrid search with a given vector; the query embedder):"
cargo bench -q --bench retrieval 2>&1 | grep -E "hybrid|embed" || true
