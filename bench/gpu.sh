#!/usr/bin/env bash
# rnnmnist's GPU check in one go: throughput against a bare cuDNN LSTM loop (rows and pixels), the
# default recipe's time to 98.5% on rows, one sMNIST epoch; one JSON summary (stdout and --out).
#
#   bash bench/gpu.sh --out gpu.json                  # on a CUDA machine: under 5 minutes
#   bash bench/gpu.sh --device cpu --dry-run          # tiny sizes on the CPU, under a minute
#
# Options are bench/gpu.py's (--device, --dry-run, --data-dir, --out). A hard stop at 300 s backs up
# the script's own caps; what it measured until then is already in --out.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && python=.venv/bin/python
if command -v timeout >/dev/null; then
    exec timeout --kill-after=10 300 "$python" bench/gpu.py "$@"
fi
exec "$python" bench/gpu.py "$@"
