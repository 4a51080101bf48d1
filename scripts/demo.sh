#!/usr/bin/env bash
# The main job end to end (run by `make demo`): Market-1501 summary, OSNet x0.25 features for the
# whole query + gallery, and their evaluation with and without k-reciprocal re-ranking.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${REIDKIT_DATA:?set REIDKIT_DATA to the folder holding market1501/}"
: "${REIDKIT_WEIGHTS:?set REIDKIT_WEIGHTS to the folder holding reid/osnet_x0_25_market1501.pth}"
out=${DEMO_OUT:-demo_out}
mkdir -p "$out"
rk=.venv/bin/reidkit

echo "== 1. the dataset"
$rk datasets info market1501

echo "== 2. features: OSNet x0.25 (torchreid model zoo weights) over query + gallery"
$rk extract --model osnet_x0_25 --weights "$REIDKIT_WEIGHTS/reid/osnet_x0_25_market1501.pth" \
  --dataset market1501 --batch-size 64 --out "$out/osnet_x0_25_market1501.npz"

echo "== 3. evaluation (cosine), with k-reciprocal re-ranking"
$rk eval --features "$out/osnet_x0_25_market1501.npz" --rerank \
  --json "$out/results.json" --plot "$out/cmc.png"

echo "wrote $out/results.json and $out/cmc.png"
