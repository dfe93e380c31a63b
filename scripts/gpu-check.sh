#!/usr/bin/env bash
# Everything one visit to a GPU machine should do, in one go: install what the GPU half
# needs, run every GPU and TensorRT test (`pytest -m "gpu or tensorrt"`), run the LRN
# kernel micro-benchmark, profile a freshly built model's engines per layer, and write a dated markdown report
# docs/gpu-check-<date>-<device>.md -- or into $OUT when that is set (the lent machines
# return what is written there).
#
#   scripts/gpu-check.sh            # from anywhere inside the checkout
#   PYTHON=/path/to/python scripts/gpu-check.sh
#
# "GPU present" means the CUDA driver reports a device (nvidia-smi, else libcuda via
# ctypes) -- never torch: a CPU build of torch on a GPU machine sees no GPU, and
# TensorRT needs no torch at all.
#
# Exit status: 2 with one line when there is no GPU; otherwise non-zero when any test
# failed, errored or was SKIPPED (on a GPU machine every gpu/tensorrt test must run), or
# when the benchmark failed. The report is written either way.
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

gpu_name() {
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1
        return
    fi
    "$PYTHON" - <<'PY' 2>/dev/null
import ctypes, sys
try:
    cuda = ctypes.CDLL("libcuda.so.1")
    count, name = ctypes.c_int(), ctypes.create_string_buffer(256)
    if cuda.cuInit(0) or cuda.cuDeviceGetCount(ctypes.byref(count)) or count.value < 1:
        sys.exit(1)
    device = ctypes.c_int()
    cuda.cuDeviceGet(ctypes.byref(device), 0)
    cuda.cuDeviceGetName(name, 256, device)
    print(name.value.decode())
except OSError:
    sys.exit(1)
PY
}

DEVICE=$(gpu_name)
if [ -z "$DEVICE" ]; then
    echo "gpu-check: no CUDA GPU here (neither nvidia-smi nor the CUDA driver reports one); nothing to check" >&2
    exit 2
fi

REPORT_DIR=${OUT:-docs}
mkdir -p "$REPORT_DIR"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
SLUG=$(printf '%s' "$DEVICE" | tr -cs 'A-Za-z0-9' '-' | sed 's/^-//; s/-$//')
STAMP=$(date -u +%Y-%m-%d)
REPORT="$REPORT_DIR/gpu-check-$STAMP-$SLUG.md"

# 1. What the GPU half needs: the package with its gpu and dev extras. Lent machines have
#    no package index; there the checkout runs from source with what is installed.
if timeout 600 "$PYTHON" -m pip install --quiet -e '.[gpu,dev]' >"$WORK/pip.log" 2>&1; then
    INSTALL="pip install -e '.[gpu,dev]'"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    INSTALL="from source (PYTHONPATH=.); pip install -e '.[gpu,dev]' failed: $(tail -n 1 "$WORK/pip.log")"
fi

# 2. Every GPU and TensorRT test, with skip reasons (-rs). A skip is a failure here.
#    Among them: an engine built from a mixed-precision INT8 file (FP16 layers between
#    casts, as `build --min-agreement` writes them; test_tensorrt.py, issue 27).
"$PYTHON" -m pytest -m "gpu or tensorrt" -rA -q -p no:cacheprovider tests >"$WORK/pytest.log" 2>&1
TESTS_RC=$?
SKIPPED=$(grep -cE '^SKIPPED' "$WORK/pytest.log" || true)
if [ "$TESTS_RC" -eq 5 ]; then
    TESTS_RC=1  # no gpu/tensorrt test was even collected
fi

# 3. Kernel bandwidth against a device-to-device copy, measured in the same run.
"$PYTHON" benchmarks/lrn_kernel.py --batch 128 --markdown "$WORK/bench.md" >"$WORK/bench.log" 2>&1
BENCH_RC=$?

# 4. Where the time goes: a small model trained, exported and built here, then every
#    engine profiled per layer (TensorRT's IProfiler) beside torch on CUDA
#    (torch.profiler). Without TensorRT the tensorrt rows say why they were skipped.
MODEL="$WORK/model"
{
    "$PYTHON" -m alexnet_deploy train --width 0.25 --epochs 1 --limit 600 --output "$MODEL/alexnet.pt" &&
        "$PYTHON" -m alexnet_deploy export --checkpoint "$MODEL/alexnet.pt" --output "$MODEL/alexnet.onnx" &&
        "$PYTHON" -m alexnet_deploy build --onnx "$MODEL/alexnet.onnx" --calibration "$MODEL/calibration" \
            --calib-from-data --engines "$MODEL/engines" &&
        "$PYTHON" -m alexnet_deploy profile --onnx "$MODEL/alexnet.onnx" --checkpoint "$MODEL/alexnet.pt" \
            --engines "$MODEL/engines" --backends tensorrt,torch --precisions fp32,fp16,int8 --batch 1,128 \
            --json "$REPORT_DIR/profile-$STAMP-$SLUG.json"
} >"$WORK/profile.log" 2>&1
PROFILE_RC=$?

{
    echo "# GPU check, $STAMP: $DEVICE"
    echo
    echo "Written by \`scripts/gpu-check.sh\` at commit \`$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\`."
    echo "Package: $INSTALL."
    echo
    echo '```'
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.memory --format=csv 2>/dev/null || echo "nvidia-smi unavailable"
    "$PYTHON" -c "import json, dataclasses; from alexnet_deploy.doctor import diagnose; print(json.dumps(dataclasses.asdict(diagnose()), indent=1))" 2>&1
    echo '```'
    echo
    echo "## Tests: \`pytest -m \"gpu or tensorrt\"\` (exit $TESTS_RC, $SKIPPED skipped)"
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
    echo
    echo "## Per-layer profile: \`alexnet-deploy profile --backends tensorrt,torch\` (exit $PROFILE_RC)"
    echo
    echo '```'
    tail -n 120 "$WORK/profile.log"
    echo '```'
} >"$REPORT"

echo "gpu-check: tests exit $TESTS_RC ($SKIPPED skipped), benchmark exit $BENCH_RC, profile exit $PROFILE_RC; report $REPORT"
[ "$TESTS_RC" -eq 0 ] && [ "$SKIPPED" -eq 0 ] && [ "$BENCH_RC" -eq 0 ] && [ "$PROFILE_RC" -eq 0 ]
