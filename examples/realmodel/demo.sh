#!/usr/bin/env bash
# The main job on a real model, end to end, through the public CLI and the SQLite default:
#   θ = SmolLM2-135M-Instruct, θ′ = θ after continued pretraining on news (a "new release"),
#   Δθ = a LoRA fine-tuned on θ for movie-review sentiment; push Δθ with its eval set, record θ′
#   as θ's descendant, check, install θ′ + Δθ (training-free), validate on θ′, print the scores.
# Run by `make demo` (the venv's python and patchctl on PATH). Everything is cached under
# $DEMO_OUT (default ./demo-out/real): a second run re-checks, re-installs and re-validates in
# under a minute, without --force. DEMO_SMOKE=1 runs the same path on a generated pico model.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${DEMO_OUT:-./demo-out/real}
export PATCHCTL_HOME="$OUT/home"
export PATCHCTL_EXAMPLES_CACHE=${PATCHCTL_EXAMPLES_CACHE:-$OUT/cache}
export PYTHONWARNINGS=ignore TQDM_DISABLE=1 TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false
unset PATCHCTL_DATABASE_URL PATCHCTL_REMOTE
NAME=demo/smollm2-movie-sentiment
SMOKE=()
[ "${DEMO_SMOKE:-}" = 1 ] && SMOKE=(--smoke) && NAME=demo/pico-movie-sentiment

if [ -t 2 ]; then B=$'\033[1m' C=$'\033[1;36m' R=$'\033[0m'; else B='' C='' R=''; fi
n=0
heading() { n=$((n + 1)); printf '\n%s== %d. %s%s\n' "$C" "$n" "$*" "$R" >&2; }
quote() { # a command line as it can be pasted back into a shell
  local out='' a
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=@,+%^-]+$ ]]; then out+="$a "; else out+="'${a//\'/\'\\\'\'}' "; fi
  done
  printf '%s' "${out% }"
}
step() { printf '%s$ %s%s\n' "$B" "$(quote "$@")" "$R" >&2; "$@"; }

heading "Prepare θ, θ′, the patch Δθ and its eval set (real assets, built once and cached in $OUT)"
mkdir -p "$OUT"
step python examples/realmodel/prepare.py "$OUT" "${SMOKE[@]}" >"$OUT.paths" || { rm -f "$OUT.paths"; exit 1; }
# shellcheck disable=SC1090
source "$OUT.paths" && rm -f "$OUT.paths"

heading "Push the patch Δθ with its lineage, its eval set and its baseline on θ"
step patchctl push "$ADAPTER" --name "$NAME" --version 1.0.0 \
  --task "movie-review sentiment (positive/negative)" --base "$THETA" --license apache-2.0 --eval "$EVAL" --eval-batch-size 16
step patchctl alias set "$NAME==1.0.0" stable

heading "The provider releases θ′: record it as a descendant of θ"
step patchctl base add "$THETA_PRIME" --parent "$THETA" --relation update

heading "Check the patch against θ′ (structure, lineage and weight drift)"
rc=0
step patchctl check "$NAME@stable" --onto "$THETA_PRIME" --drift || rc=$?
[ $rc = 0 ] || [ $rc = 20 ] || exit $rc # 20: warnings only (the install below still runs the checks)

heading "Install θ′ + Δθ (streaming merge, bit-identical to PEFT)"
INSTALLED="$OUT/$(basename "$THETA_PRIME")+movie-sentiment"
if [ -e "$INSTALLED" ]; then
  echo "(replacing the previous run's $INSTALLED)" >&2
  rm -rf "$INSTALLED"
fi
step patchctl install "$NAME@stable" --onto "$THETA_PRIME" --out "$INSTALLED" >/dev/null

heading "Validate: does the ported patch still do its job on θ′?"
rc=0
step patchctl validate "$NAME@stable" --onto "$THETA_PRIME" --batch-size 16 --json >"$OUT/validate.json" || rc=$?
[ $rc = 0 ] || [ $rc = 22 ] || exit $rc # 22: the patch regressed on θ′ (the table shows by how much)
python examples/realmodel/scores.py from-validate "$OUT/validate.json" --task-dir "$EVAL"

heading "Next steps"
cat >&2 <<EOF
The demo's catalog is PATCHCTL_HOME=$OUT/home. To use it from your shell:
  export PATH="$PWD/.venv/bin:\$PATH"   # puts patchctl on your PATH
  export PATCHCTL_HOME="$OUT/home"
Then try:
  patchctl show $NAME@stable             # manifest, lineage, checks, installs
  patchctl check $NAME --onto $(quote "$THETA_PRIME") --drift
  patchctl base list
The merged model θ′ + Δθ is in $INSTALLED (a normal transformers folder).
EOF
