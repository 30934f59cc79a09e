#!/usr/bin/env bash
# The main job so far, end to end, on the embedded default (SQLite catalog, local files):
# generate a pico Llama base + LoRA adapter, push it, list, show, alias, record θ → θ′ lineage.
# Idempotent: a second run pushes identical content (a no-op). Run by `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-./demo-out}
export PATCHCTL_HOME="$OUT/home"
unset PATCHCTL_DATABASE_URL PATCHCTL_REMOTE

step() { printf '\n\033[1m$ %s\033[0m\n' "$*" >&2; "$@"; }

python examples/make_pico.py "$OUT/models" >/dev/null
MODELS="$OUT/models"

step patchctl push "$MODELS/pico-llama-lora" --name demo/pico-sst2 --version 1.0.0 \
  --task "pico demo: sentiment" --base "$MODELS/pico-llama" --base-revision demo-r1
step patchctl list
step patchctl show demo/pico-sst2
step patchctl alias set demo/pico-sst2==1.0.0 stable
step patchctl base add "$MODELS/pico-llama-v2" --revision demo-r2 --parent "$MODELS/pico-llama" --relation update
step patchctl base list
step patchctl show demo/pico-sst2@stable --json >"$OUT/show.json"
echo "demo: manifest and lineage of demo/pico-sst2@stable written to $OUT/show.json" >&2
