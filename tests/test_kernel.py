"""The Triton LRN kernel against independent references: the numpy transcription of
the ONNX specification, onnxruntime's LRN kernel and PyTorch's local_response_norm.

On CPU the kernel runs in Triton's interpreter. TRITON_INTERPRET=1 must be set before
the kernel is decorated and would turn every later @triton.jit of the session into an
interpreted one (the GPU tests below need compiled kernels), so the interpreter runs in
one child process that computes every case; the tests compare its outputs here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import onnxruntime_lrn

from alexnet_deploy.lrn import LRNParams, local_response_norm, lrn_reference

pytest.importorskip("triton", reason="triton is not installed (it ships for Linux x86_64; see the dev extra)")

from alexnet_deploy.plugin.kernel import (
    TACTICS,
    KernelConfig,
    compile_ptx,
    kernel_constants,
    lrn_triton,
    ptx_isa_version,
)

REPO = Path(__file__).resolve().parents[1]
# Small enough for the interpreter, awkward enough to exercise every edge: 2 position
# tiles (30 positions, the second partial) x 3 channel chunks (9 channels in 4+4+1).
TAIL_CONFIG = KernelConfig(block=16, channels_per_program=4, lookahead=2)
SHAPE = (2, 9, 3, 5)

INTERPRETER = """
import json, sys
import numpy as np, torch
from alexnet_deploy.lrn import LRNParams
from alexnet_deploy.plugin.kernel import KernelConfig, lrn_triton
inputs, specs = np.load(sys.argv[1]), json.loads(open(sys.argv[2]).read())
outputs = {
    name: lrn_triton(torch.from_numpy(inputs[name]), LRNParams(**spec["params"]), KernelConfig(**spec["config"])).numpy()
    for name, spec in specs.items()
}
np.savez(sys.argv[3], **outputs)
"""


VARIANTS = {"paper": LRNParams(), "k1-beta0.5": LRNParams(bias=1.0, beta=0.5)}


def _cases() -> dict[str, tuple[np.ndarray, LRNParams, KernelConfig]]:
    """name -> (input, LRN parameters, kernel configuration)."""
    rng = np.random.default_rng(0)
    cases = {}
    for size in (1, 2, 3, 4, 5, 6):  # signed values: LRN must not assume ReLU'd input
        cases[f"fp32-size{size}"] = (
            rng.normal(0, 30, SHAPE).astype(np.float32),
            LRNParams(size=size, alpha=1e-3),
            TAIL_CONFIG,
        )
    for size in (3, 4, 5):
        cases[f"fp16-size{size}"] = (
            rng.normal(0, 30, SHAPE).astype(np.float16),
            LRNParams(size=size, alpha=1e-3),
            TAIL_CONFIG,
        )
    # 300**2 = 90000 overflows float16 (max 65504): the sum must be taken in float32.
    large = (300 * np.sign(rng.normal(size=SHAPE))).astype(np.float16)
    cases["fp16-large"] = (large, LRNParams(), TAIL_CONFIG)
    # Away from the default parameters, and |x| ~ 1e3 where alpha/n * sum(x^2) dominates k:
    # an error in alpha, beta or k shows here, not in the end-to-end logits.
    thousand = (np.sign(rng.normal(size=SHAPE)) * rng.uniform(800, 1200, SHAPE)).astype(np.float32)
    for name, params in VARIANTS.items():
        cases[f"{name}-fp32"] = (rng.normal(0, 30, SHAPE).astype(np.float32), params, TAIL_CONFIG)
        cases[f"{name}-fp32-1e3"] = (thousand, params, TAIL_CONFIG)
    cases["paper-fp16-1e3"] = (thousand.astype(np.float16), LRNParams(), TAIL_CONFIG)
    relu = np.maximum(rng.normal(0, 40, (1, 40, 2, 3)), 0).astype(np.float32)  # crosses 16- and 32-channel chunks
    for tactic, config in TACTICS.items():
        cases[f"tactic{tactic}"] = (relu, LRNParams(), config)
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory) -> dict[str, np.ndarray]:
    """Every case's kernel output, computed by Triton's CPU interpreter in a child process."""
    work = tmp_path_factory.mktemp("interpreter")
    np.savez(work / "inputs.npz", **{name: x for name, (x, _, _) in CASES.items()})
    specs = {name: {"params": p.to_dict(), "config": asdict(c)} for name, (_, p, c) in CASES.items()}
    (work / "specs.json").write_text(json.dumps(specs))
    env = dict(
        os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    subprocess.run(
        [sys.executable, "-c", INTERPRETER, work / "inputs.npz", work / "specs.json", work / "outputs.npz"],
        env=env,
        cwd=REPO,
        check=True,
        timeout=600,
    )
    with np.load(work / "outputs.npz") as outputs:
        return {name: outputs[name] for name in outputs.files}


def _tolerance(dtype: np.dtype) -> dict[str, float]:
    # fp16 output is the fp32 result rounded once: half an ulp is 4.9e-4 relative.
    return {"rtol": 1e-3, "atol": 1e-3} if dtype == np.float16 else {"rtol": 1e-5, "atol": 1e-5}


@pytest.mark.parametrize("name", list(CASES))
def test_interpreted_kernel_matches_onnx_specification(interpreted, name):
    x, params, _ = CASES[name]
    y = interpreted[name]
    assert y.dtype == x.dtype and y.shape == x.shape
    expected = lrn_reference(x.astype(np.float64), params)
    np.testing.assert_allclose(y.astype(np.float64), expected, **_tolerance(x.dtype))


@pytest.mark.parametrize("size", [1, 3, 5])  # onnxruntime's LRN accepts odd sizes only
def test_interpreted_kernel_matches_onnxruntime_lrn(interpreted, size):
    x, params, _ = CASES[f"fp32-size{size}"]
    np.testing.assert_allclose(interpreted[f"fp32-size{size}"], onnxruntime_lrn(x, params), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", [f"{v}-fp32{m}" for v in VARIANTS for m in ("", "-1e3")])
def test_interpreted_kernel_matches_onnxruntime_lrn_off_the_default(interpreted, name):
    x, params, _ = CASES[name]
    np.testing.assert_allclose(interpreted[name], onnxruntime_lrn(x, params), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [1, 3, 5])  # PyTorch's window equals ONNX's for odd sizes
def test_interpreted_kernel_matches_pytorch_for_odd_sizes(interpreted, size):
    x, p, _ = CASES[f"fp32-size{size}"]
    theirs = F.local_response_norm(torch.from_numpy(x), p.size, p.alpha, p.beta, p.bias).numpy()
    np.testing.assert_allclose(interpreted[f"fp32-size{size}"], theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [2, 4, 6])
def test_interpreted_kernel_uses_the_onnx_window_for_even_sizes(interpreted, size):
    x, p, _ = CASES[f"fp32-size{size}"]
    ours = local_response_norm(torch.from_numpy(x), p).numpy()  # ONNX window, leaning forward
    np.testing.assert_allclose(interpreted[f"fp32-size{size}"], ours, rtol=1e-5, atol=1e-5)
    pytorch = F.local_response_norm(torch.from_numpy(x), p.size, p.alpha, p.beta, p.bias).numpy()  # leans backward
    assert np.abs(interpreted[f"fp32-size{size}"] - pytorch).max() > 1e-2


def test_interpreted_kernel_keeps_large_half_inputs_finite(interpreted):
    y = interpreted["fp16-large"]
    assert np.isfinite(y).all()
    # |x| = 300 everywhere: a full window gives 300 / (2 + 5e-4/5 * 5 * 300**2)**0.75 = 300 / 47**0.75
    interior = np.abs(y[:, 2:-2].astype(np.float64))
    np.testing.assert_allclose(interior, 300 / 47**0.75, rtol=1e-3)


def test_kernel_rejects_what_it_cannot_compute():
    with pytest.raises(ValueError, match="NCHW"):
        lrn_triton(torch.zeros(3, 4, 5))
    with pytest.raises(ValueError, match="float32 or float16"):
        lrn_triton(torch.zeros(1, 3, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="bias > 0"):
        kernel_constants(LRNParams(bias=0.0))
    with pytest.raises(ValueError, match="lookahead"):
        kernel_constants(LRNParams(), KernelConfig(lookahead=0))


def test_tensorrt_ptx_has_the_aot_calling_convention_and_the_drivers_isa():
    """What plugin.registration's aot_impl embeds, compiled here without a GPU: TensorRT passes
    (input pointer, extra int args, output pointer), and the PTX must declare an ISA the
    target machine's driver can JIT."""
    kernel = compile_ptx("fp16", LRNParams(), capability=90, max_ptx_version=85)
    assert ptx_isa_version(kernel.ptx) == 85
    assert ".target sm_90" in kernel.ptx
    assert kernel.name == "lrn_kernel" and kernel.threads_per_block == TACTICS[1].num_warps * 32
    assert kernel.shared_mem == 0
    entry = kernel.ptx[kernel.ptx.index(".entry lrn_kernel(") :]
    params = [line.strip() for line in entry.split(")", 1)[0].splitlines()[1:]]
    kinds = ["ptr" if ".ptr" in p else p.split()[1] for p in params]
    # Exactly what TensorRT's AOT launch passes: x, channels, plane, positions, y. Triton
    # (3.3+) appends scratch pointers of its own; compile_ptx strips them once it has
    # checked the body never reads them (strip_unused_trailing_params).
    assert kinds == ["ptr", ".u32", ".u32", ".u32", "ptr"]


def test_ptx_isa_is_left_alone_when_the_driver_is_newer():
    kernel = compile_ptx("fp32", LRNParams(), capability=80, max_ptx_version=999)
    assert ".target sm_80" in kernel.ptx and ptx_isa_version(kernel.ptx) >= 80


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")

# AlexNet's two LRN inputs at the bench batch: conv1 (96 x 55 x 55) and conv2 (256 x 27 x 27).
ALEXNET_SHAPES = [(128, 96, 55, 55), (128, 256, 27, 27)]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("shape", ALEXNET_SHAPES, ids=["conv1", "conv2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("tactic", list(TACTICS))
def test_gpu_kernel_matches_pytorch_on_alexnet_shapes(shape, dtype, tactic):
    generator = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(shape, device="cuda", generator=generator).mul_(40).relu_().to(dtype)
    y = lrn_triton(x, LRNParams(), TACTICS[tactic])
    torch.cuda.synchronize()
    expected = local_response_norm(x, LRNParams())  # float32 sum, cast back: the same contract
    assert y.dtype == dtype
    torch.testing.assert_close(
        y.float(), expected.float(), **_tolerance(np.float16 if dtype == torch.float16 else np.float32)
    )
    if dtype == torch.float32:
        theirs = F.local_response_norm(x, 5, 5e-4, 0.75, 2.0)
        torch.testing.assert_close(y, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@needs_gpu
def test_gpu_kernel_keeps_large_half_inputs_finite():
    x = torch.full((2, 96, 55, 55), 300.0, device="cuda", dtype=torch.float16)
    y = lrn_triton(x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(
        y[:, 2:-2].float(), torch.full_like(y[:, 2:-2].float(), 300 / 47**0.75), rtol=1e-3, atol=1e-3
    )
