#!/usr/bin/env bash
# GPU readiness in one go (under 8 minutes on one H100/H200), printing one JSON summary on stdout:
#   1. the tests that need CUDA (`pytest -m cuda`: every model type and update rule for a few steps, bf16
#      autocast, compile, cuDNN LSTMs with SA-VAE's finite differences, IW-NLL, sampling);
#   2. benchmarks/speed.py --device cuda on He et al.'s Yahoo model (tokens/s of each update rule, IW-NLL, MI/AU);
#   3. benchmarks/gpu_projection.py: one full-scale epoch of he2019-yahoo's vanilla row and a few aggressive
#      outer steps and SA-VAE steps, projected to the wall time of every row of the full-scale suite.
# Usage: bash benchmarks/gpu_check.sh            (YAHOO_DATA=DIR: Yahoo release folder, default ../shared/data/yahoo;
#                                                 GPU_CHECK_OUT=DIR: where the logs go, default a temporary folder)
# Without CUDA it exits at once (status 2) with one line on stderr.
set -uo pipefail
cd "$(dirname "$0")/.."

if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is False): nothing to check" >&2
    exit 2
fi

OUT=${GPU_CHECK_OUT:-$(mktemp -d)}
YAHOO=${YAHOO_DATA:-../shared/data/yahoo}
mkdir -p "$OUT"
started=$(date +%s)

if [ ! -f data/yahoo-mini/train.txt ]; then
    python -m textvae data prepare yahoo-mini --from "$YAHOO" > "$OUT/prepare.log" 2>&1
fi

timeout 270 python -m pytest -m cuda -q -p no:cacheprovider --junitxml "$OUT/cuda.xml" tests/test_cuda.py \
    > "$OUT/pytest.log" 2>&1
pytest_rc=$?
timeout 120 python benchmarks/speed.py --device cuda --data "$YAHOO" > "$OUT/speed.json" 2> "$OUT/speed.log"
speed_rc=$?
timeout 150 python benchmarks/gpu_projection.py --suite he2019-yahoo --device cuda \
    > "$OUT/projection.json" 2> "$OUT/projection.log"
projection_rc=$?

python benchmarks/gpu_summary.py "$OUT" "$pytest_rc" "$speed_rc" "$projection_rc" "$started"
