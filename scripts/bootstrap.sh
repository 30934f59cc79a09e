#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install patchctl with the given extras.
# torch goes in first from a CPU-only build where one is at hand, so that resolving the
# project's "torch" requirement never pulls a multi-GB CUDA build by accident.
set -euo pipefail
venv=${1:-.venv}
extras=${2:-dev}
python=${PYTHON:-python3}
say() { printf 'bootstrap: %s\n' "$*" >&2; }
# pip, quiet: its index and build warnings are shown only when it fails (then all of its output);
# on success only lines about errors or dependency conflicts get through
quiet() {
  local log rc=0
  log=$(mktemp)
  "$@" >"$log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    cat "$log" >&2
  else
    grep -iE '^error|incompatible|conflict' "$log" >&2 || true
  fi
  rm -f "$log"
  return "$rc"
}
if [ ! -x "$venv/bin/python" ]; then
  say "creating the virtual environment $venv ($("$python" --version 2>&1))"
  "$python" -m venv "$venv"
fi
py="$venv/bin/python"
say "updating pip"
quiet "$py" -m pip install -q --upgrade pip
if ! "$py" -c 'import torch' 2>/dev/null; then
  say "installing torch, CPU build (the largest download: a few minutes on a slow link)"
  # 1. a CPU wheel on this machine's disk / find-links (pip picks 2.13.0+cpu over 2.13.0)
  # 2. the PyTorch CPU index, where reachable
  # 3. plain PyPI as the last resort
  "$py" -m pip install -q "torch==2.13.0" --no-index 2>/dev/null \
    || "$py" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu 2>/dev/null \
    || "$py" -m pip install -q torch
fi
say "installing patchctl (editable) with the extras [$extras]"
quiet "$py" -m pip install -q -e ".[$extras]"
say "done: $venv is ready"
