"""The TensorRT profiler path (``tensorrt/profiler.py``, ``TensorRTRunner.profile``)
against TensorRT's real Python layer, for every supported release, on a machine with
no GPU and no TensorRT core: the official bindings wheel with the core's entry points
stood in (``tensorrt_standin.py``), as the plugin conformance suite runs it.

This proves our recorder is a ``tensorrt.IProfiler`` that pybind accepts, that what it
is told per layer becomes per-call op times mapped onto AlexNet's layers (fused layers
with their nodes, reformat copies as conversions), and that every execution-context
method ``profile`` calls exists in each release. Whether TensorRT calls it, and with
which names, only a GPU shows: ``scripts/gpu-check.sh`` profiles the built engines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tensorrt_standin import RELEASES, environment

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("release", RELEASES, ids=[r.version for r in RELEASES])
def test_the_iprofiler_path_runs_on_tensorrts_python_layer(release, tmp_path):
    out = tmp_path / "observed.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "tensorrt_profiler_probe.py"), str(out)],
        env=environment(release, REPO),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    observed = json.loads(out.read_text())
    assert observed["version"] == release.version and observed["is_iprofiler"]
    assert observed["missing_api"] == []
    ops = {op["name"]: op for op in observed["ops"]}
    conv1 = ops["conv1/QuantizeLinear_0 + conv1 + conv1/Relu_1"]
    assert conv1["layer"] == "conv1" and conv1["ms"] == 1.5  # per call: 2 runs of 1.5 ms
    assert conv1["fused"] == ["conv1/QuantizeLinear_0", "conv1", "conv1/Relu_1"]
    assert ops["Reformatting CopyNode for Input Tensor 0 to norm1"]["layer"] == "conversions"
    assert [ops[name]["layer"] for name in ("norm1", "fc6 + fc6/Relu_17", "fc8")] == ["norm1", "fc6", "fc8"]
