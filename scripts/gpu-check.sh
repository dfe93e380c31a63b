#!/usr/bin/env bash
# Everything one visit to a GPU machine should do, in one go: make the package
# importable, run every GPU and TensorRT test (`pytest -m "gpu or tensorrt"`), run the
# LRN kernel micro-benchmark, and write a dated markdown report
# docs/gpu-check-<date>-<device>.md -- or into $OUT when that is set (the lent
# machines return what is written there).
#
#   scripts/gpu-check.sh            # from anywhere inside the checkout
#   PYTHON=/path/to/python scripts/gpu-check.sh
#
# Exit status: non-zero when the tests or the benchmark failed.
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
REPORT_DIR=${OUT:-docs}
mkdir -p "$REPORT_DIR"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# 1. Importable package. An editable install needs an index for its build backend; the
#    lent GPU machines have none, so fall back to running from source.
if ! "$PYTHON" -c "import alexnet_deploy" 2>/dev/null; then
    if timeout 300 "$PYTHON" -m pip install --quiet -e '.[dev]' >"$WORK/pip.log" 2>&1; then
        INSTALL="pip install -e '.[dev]'"
    else
        export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
        INSTALL="from source (PYTHONPATH=.), pip install was not possible: $(tail -n 1 "$WORK/pip.log")"
    fi
else
    INSTALL="already importable"
fi

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu-check: torch sees no CUDA GPU here; nothing to check" >&2
    exit 2
fi
DEVICE=$("$PYTHON" -c "import torch; print(torch.cuda.get_device_name(0))")
SLUG=$(printf '%s' "$DEVICE" | tr -cs 'A-Za-z0-9' '-' | sed 's/^-//; s/-$//')
STAMP=$(date -u +%Y-%m-%d)
REPORT="$REPORT_DIR/gpu-check-$STAMP-$SLUG.md"

# 2. Every GPU and TensorRT test. Modules whose optional dependencies are missing on this
#    machine must not stop the others from running.
"$PYTHON" -m pytest -m "gpu or tensorrt" -rA -q --continue-on-collection-errors -p no:cacheprovider tests \
    >"$WORK/pytest.log" 2>&1
TESTS_RC=$?

# 3. Kernel bandwidth against a device-to-device copy, measured in the same run.
"$PYTHON" benchmarks/lrn_kernel.py --batch 128 --markdown "$WORK/bench.md" >"$WORK/bench.log" 2>&1
BENCH_RC=$?

{
    echo "# GPU check, $STAMP: $DEVICE"
    echo
    echo "Written by \`scripts/gpu-check.sh\` at commit \`$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\`."
    echo "Package: $INSTALL."
    echo
    echo '```'
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.memory --format=csv 2>/dev/null || echo "nvidia-smi unavailable"
    "$PYTHON" -c "import json, dataclasses; from alexnet_deploy.doctor import diagnose; print(json.dumps(dataclasses.asdict(diagnose()), indent=1))"
    echo '```'
    echo
    echo "## Tests: \`pytest -m \"gpu or tensorrt\"\` (exit $TESTS_RC)"
    echo
    echo '```'
    grep -E '^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)|[0-9]+ (passed|failed|skipped|deselected|errors?)' "$WORK/pytest.log" | tail -n 80
    echo '```'
    echo
    echo "## LRN kernel micro-benchmark (exit $BENCH_RC)"
    echo
    if [ -s "$WORK/bench.md" ]; then
        sed '1d' "$WORK/bench.md"  # its own title is replaced by this report's
    else
        echo '```'
        tail -n 40 "$WORK/bench.log"
        echo '```'
    fi
} >"$REPORT"

echo "gpu-check: tests exit $TESTS_RC, benchmark exit $BENCH_RC; report $REPORT"
[ "$TESTS_RC" -eq 0 ] && [ "$BENCH_RC" -eq 0 ]
