"""The LRN convention: our torch op equals PyTorch's for odd sizes, the ONNX spec
(numpy transcription) for all sizes, and onnxruntime's LRN kernel."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alexnet_deploy.lrn import LRNParams, local_response_norm, lrn_reference
from conftest import onnxruntime_lrn


@pytest.fixture
def activations():
    # ReLU-like magnitudes of AlexNet's conv1 output, so the LRN term matters
    return np.abs(np.random.default_rng(0).normal(0, 30, (2, 13, 5, 6))).astype(np.float32)


@pytest.mark.parametrize("size", [3, 5, 7])
def test_matches_pytorch_local_response_norm_for_odd_sizes(activations, size):
    p = LRNParams(size=size)
    ours = local_response_norm(torch.from_numpy(activations), p)
    theirs = F.local_response_norm(torch.from_numpy(activations), size, p.alpha, p.beta, p.bias)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("size", [1, 2, 4, 5, 6])
def test_matches_onnx_specification_including_even_sizes(activations, size):
    p = LRNParams(size=size, alpha=1e-3)
    ours = local_response_norm(torch.from_numpy(activations), p).numpy()
    np.testing.assert_allclose(ours, lrn_reference(activations, p), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [3, 5])  # onnxruntime's LRN kernel accepts odd sizes only
def test_onnx_reference_agrees_with_onnxruntime(activations, size):
    p = LRNParams(size=size, alpha=1e-3)
    np.testing.assert_allclose(onnxruntime_lrn(activations, p), lrn_reference(activations, p), rtol=1e-5, atol=1e-6)


def test_even_size_window_leans_forward_unlike_pytorch(activations):
    p = LRNParams(size=4, alpha=1e-2)
    ours = local_response_norm(torch.from_numpy(activations), p)
    pytorch = F.local_response_norm(torch.from_numpy(activations), 4, p.alpha, p.beta, p.bias)
    assert not torch.allclose(ours, pytorch)


def test_half_input_accumulates_in_float32_without_overflow():
    x = torch.full((1, 5, 2, 2), 300.0)  # 300**2 = 90000 > float16 max 65504
    y = local_response_norm(x.half())
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), local_response_norm(x), rtol=2e-3, atol=1e-3)
