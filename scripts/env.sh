#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment in .venv when the
# requirements changed since it was last built; sourced by scripts/app, scripts/test and scripts/check.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RESNET_VIZ_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
stamp="$VENV/.requirements.sha"
# RESNET_VIZ_CLUSTER_EXTRA=1 adds the optional Ray extra (requirements-cluster.txt), so that
# tests/test_ray_backend.py runs instead of being skipped (.ci/run sets it).
reqs=("$ROOT/requirements.txt" "$ROOT/requirements-dev.txt")
if [ "${RESNET_VIZ_CLUSTER_EXTRA:-0}" = 1 ]; then reqs+=("$ROOT/requirements-cluster.txt"); fi
want="$(cat "${reqs[@]}" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "Setting up $VENV (first time: torch is large, this takes a few minutes)..." >&2
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2 || true
  "$VENV/bin/python" -m pip install --quiet "${reqs[@]/#/-r}" >&2
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
