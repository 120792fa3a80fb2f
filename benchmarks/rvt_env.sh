#!/usr/bin/env bash
# A virtual environment with what RVT's model code (github.com/uzh-rpg/RVT) needs, for benchmarks/rvt_model.py,
# bench_vs_rvt.py and profile_vs_rvt.py. Idempotent: an environment that already imports everything is kept.
#
#   PY=$(bash benchmarks/rvt_env.sh | tail -n 1)           # ${XDG_CACHE_HOME:-$HOME/.cache}/yolo-etram-rvt-venv
#   PY=$(bash benchmarks/rvt_env.sh /tmp/rvt-venv | tail -n 1)
#
# Prints the environment's python on its last line; pip's output goes to stderr.
set -euo pipefail
venv="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/yolo-etram-rvt-venv}"
needs="import torch, numpy, omegaconf, einops, timm, h5py, hdf5plugin, numba, tqdm"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "$needs" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch==2.14.1 numpy omegaconf einops timm h5py hdf5plugin numba tqdm >&2
fi
echo "$venv/bin/python"
