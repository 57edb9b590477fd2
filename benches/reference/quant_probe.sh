#!/usr/bin/env bash
# Lower-precision variants of the SmolLM2 scoring graph against fp32, in one process (not part
# of CI; issue 15 item 2). See the docstring of benches/reference/quant_probe.py.
#
#   benches/reference/quant_probe.sh [--threads N] [--window T] [--repeats R] [--variants a,b]
#
# Needs the models (onnx/setup.py), the SQuAD dev corpus (onnx/squad.py) and the reference venv
# that benches/reference/run.sh makes (for the SmolLM2 tokenizer).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
MODELS="${METARAG_MODELS:-$root/models}"
python3 onnx/setup.py >/dev/null
python3 onnx/squad.py >/dev/null
text=$(ls "$MODELS"/datasets/squad-dev/corpus/*.txt | head -1)
tok="$MODELS/tools/reference-venv/bin/python"
[ -x "$tok" ] || { echo "quant_probe.sh: no $tok: run benches/reference/run.sh once first" >&2; exit 1; }
ids=$(mktemp --suffix .npy)
calib=$(mktemp --suffix .npy)
trap 'rm -f "$ids" "$calib"' EXIT
# The smooth variants' activation maxima come from the example corpus, not the evaluated text.
tokenize() {
  "$tok" - "$MODELS/smollm2-135m-instruct/tokenizer.json" "$@" <<'PY'
import sys, numpy as np
from tokenizers import Tokenizer
t = Tokenizer.from_file(sys.argv[1])
text = "\n\n".join(open(p).read() for p in sys.argv[3:])
np.save(sys.argv[2], np.array(t.encode(text, add_special_tokens=False).ids, dtype=np.int64))
PY
}
tokenize "$ids" "$text"
tokenize "$calib" examples/corpus/washington-1790.txt examples/corpus/debian-faq-next-release.md
echo "text: $text"
"$MODELS/.venv/bin/python" benches/reference/quant_probe.py --model "$MODELS/smollm2-135m-instruct/model.onnx" \
  --ids "$ids" --calibration "$calib" "$@"
