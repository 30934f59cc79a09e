#!/usr/bin/env bash
# The main job, end to end, on the embedded default (SQLite catalog, local files).
set -euo pipefail
echo "demo: not yet implemented" >&2
