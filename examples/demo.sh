#!/usr/bin/env bash
# The main job, end to end, on the embedded default (SQLite catalog, local files):
#   generate a pico Llama base θ, its new release θ′ and a LoRA adapter (no downloads);
#   push the patch with its lineage; record θ′ as θ's descendant; check the patch against θ′;
#   install it onto θ′ (streaming merge); verify the result against PEFT; publish to and pull
#   from a directory remote. Idempotent: re-running pushes identical content (a no-op).
# Run by `make demo` (the venv's python and patchctl on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-./demo-out}
export PATCHCTL_HOME="$OUT/home"
unset PATCHCTL_DATABASE_URL PATCHCTL_REMOTE

step() { printf '\n\033[1m$ %s\033[0m\n' "$*" >&2; "$@"; }

python examples/make_pico.py "$OUT/models" >/dev/null
MODELS="$OUT/models"

# 1. after fine-tuning: push the patch with its lineage
step patchctl push "$MODELS/pico-llama-lora" --name demo/pico-sst2 --version 1.0.0 \
  --task "pico demo: sentiment" --base "$MODELS/pico-llama" --base-revision demo-r1
step patchctl list
step patchctl show demo/pico-sst2
step patchctl alias set demo/pico-sst2==1.0.0 stable

# 2. the provider releases θ′: record it as a descendant of θ
step patchctl base add "$MODELS/pico-llama-v2" --revision demo-r2 --parent "$MODELS/pico-llama" --relation update
step patchctl base list

# 3. check the patch against θ′ (headers only), then install θ′ + Δθ
step patchctl check demo/pico-sst2@stable --onto "$MODELS/pico-llama-v2"
step patchctl install demo/pico-sst2@stable --onto "$MODELS/pico-llama-v2" --out "$OUT/pico-llama-v2-sst2" --dry-run
step patchctl install demo/pico-sst2@stable --onto "$MODELS/pico-llama-v2" --out "$OUT/pico-llama-v2-sst2" --overwrite
step python examples/verify_install.py "$OUT/pico-llama-v2-sst2" "$MODELS/pico-llama-v2" "$MODELS/pico-llama-lora"

# 4. share it: publish to a directory remote, pull it into a second catalog
step patchctl push "$MODELS/pico-llama-lora" --name demo/pico-sst2 --version 1.0.0 \
  --task "pico demo: sentiment" --base "$MODELS/pico-llama" --base-revision demo-r1 --to "file://$(realpath "$OUT")/remote"
step patchctl --home "$OUT/home-teammate" pull "file://$(realpath "$OUT")/remote/demo/pico-sst2@1.0.0"
step patchctl show demo/pico-sst2@stable --json >"$OUT/show.json"
echo "demo: done. Merged model in $OUT/pico-llama-v2-sst2; manifest, lineage, compat report and install in $OUT/show.json" >&2
