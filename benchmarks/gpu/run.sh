#!/usr/bin/env bash
# Every GPU check of lmdev in one run (target: under 8 minutes on one GPU); figures as JSON under
# ${OUT:-benchmarks/gpu/out}/gpu/. Without a CUDA GPU it stops at once (exit 2) and says why.
#   benchmarks/gpu/run.sh              # all checks
#   benchmarks/gpu/run.sh --dry-run    # list the checks and their commands, run nothing
#   benchmarks/gpu/run.sh --only bench,resume
# See docs/figures/gpu.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" "$here/checks.py" "$@"
