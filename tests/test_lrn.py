"""The LRN convention: our torch op equals PyTorch's for odd sizes, the ONNX spec
(numpy transcription) for all sizes, and onnxruntime's LRN kernel; its default is
the paper's formula (alpha not divided by n), transcribed separately."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import onnxruntime_lrn

from alexnet_deploy.lrn import LRNParams, local_response_norm, lrn_reference


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


GRADIENT_CASES = {
    "paper": LRNParams(),
    "even-size-4": LRNParams(size=4, alpha=0.1, beta=0.6, bias=1.5),
    "size-1": LRNParams(size=1, alpha=0.3, beta=0.9, bias=1.0),
    "window-wider-than-channels": LRNParams(size=9, alpha=0.2, beta=0.75, bias=1.0),
}


@pytest.mark.parametrize("params", GRADIENT_CASES.values(), ids=GRADIENT_CASES.keys())
def test_hand_written_gradient_is_the_derivative_of_the_forward(params):
    """torch.autograd.gradcheck: the backward against finite differences of the forward,
    in float64, with alpha large enough that the window term carries real weight."""
    x = torch.from_numpy(np.abs(np.random.default_rng(1).normal(0, 2, (2, 6, 3, 3)))).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: local_response_norm(t, params), (x,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("params", GRADIENT_CASES.values(), ids=GRADIENT_CASES.keys())
def test_hand_written_gradient_matches_autograd_through_the_textbook_formula(params):
    """An independent route to the same gradient: autograd through LRN written as in the
    ONNX specification, one channel window at a time."""
    x = torch.from_numpy(np.abs(np.random.default_rng(2).normal(0, 30, (2, 7, 4, 5))).astype(np.float32))
    upstream = torch.from_numpy(np.random.default_rng(3).normal(0, 1, x.shape).astype(np.float32))

    def textbook(t: torch.Tensor) -> torch.Tensor:
        channels = t.shape[1]
        sums = [
            t[:, max(0, c - params.window_before) : min(channels, c + params.window_after + 1)].square().sum(1)
            for c in range(channels)
        ]
        return t / (params.bias + params.alpha / params.size * torch.stack(sums, 1)) ** params.beta

    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    (local_response_norm(ours, params) * upstream).sum().backward()
    (textbook(theirs) * upstream).sum().backward()
    assert ours.grad is not None and theirs.grad is not None
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-4, atol=1e-6)


def test_half_input_accumulates_in_float32_without_overflow():
    x = torch.full((1, 5, 2, 2), 300.0)  # 300**2 = 90000 > float16 max 65504
    y = local_response_norm(x.half())
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), local_response_norm(x), rtol=2e-3, atol=1e-3)


# Parameters away from the default, and inputs where the LRN term dominates: an error in
# alpha, beta or k shows here (it does not in the end-to-end logits, see lrn.py).
VARIANTS = {
    "paper": LRNParams(),
    "k1-beta0.5": LRNParams(bias=1.0, beta=0.5),
    "caffe": LRNParams(alpha=1e-4, bias=1.0),
}


def large_activations() -> np.ndarray:
    """Signed values with |x| around 1e3, where alpha/n * sum(x^2) is ~1e2 >> k."""
    rng = np.random.default_rng(1)
    return (rng.choice([-1.0, 1.0], (2, 11, 4, 3)) * rng.uniform(800, 1200, (2, 11, 4, 3))).astype(np.float32)


def paper_formula(x: np.ndarray, n: int = 5, k: float = 2.0, alpha: float = 1e-4, beta: float = 0.75) -> np.ndarray:
    """Krizhevsky et al. (2012), Section 3.3, as printed: no 1/n before the sum."""
    x64 = x.astype(np.float64)
    channels = x64.shape[1]
    out = np.empty_like(x64)
    for i in range(channels):
        window = x64[:, max(0, i - n // 2) : min(channels - 1, i + n // 2) + 1]
        out[:, i] = x64[:, i] / (k + alpha * (window**2).sum(axis=1)) ** beta
    return out


def test_default_is_the_papers_formula_with_alpha_5e_4_in_our_convention():
    assert LRNParams() == LRNParams(size=5, alpha=5e-4, beta=0.75, bias=2.0)
    for x in (large_activations(), np.abs(np.random.default_rng(2).normal(0, 30, (2, 13, 5, 6))).astype(np.float32)):
        ours = local_response_norm(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(ours, paper_formula(x), rtol=1e-5)
        # the old default (alpha 1e-4 with k 2) is measurably another function here
        assert (
            np.abs(local_response_norm(torch.from_numpy(x), LRNParams(alpha=1e-4)).numpy() - ours).max()
            > 1e-2 * np.abs(ours).max()
        )


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("magnitude", ["relu30", "signed1e3"])
def test_variants_match_onnx_spec_onnxruntime_and_pytorch(activations, name, magnitude):
    x = activations if magnitude == "relu30" else large_activations()
    p = VARIANTS[name]
    ours = local_response_norm(torch.from_numpy(x), p).numpy()
    np.testing.assert_allclose(ours, lrn_reference(x, p), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours, onnxruntime_lrn(x, p), rtol=1e-5, atol=1e-6)
    theirs = F.local_response_norm(torch.from_numpy(x), p.size, p.alpha, p.beta, p.bias).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def _window_sum_lrn(x: np.ndarray, p: LRNParams, edit=None, sum_by: str = "matmul") -> np.ndarray:
    """``graph.lrn_as_window_sum`` of a one-LRN graph, run by onnxruntime."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from alexnet_deploy.graph import lrn_as_window_sum

    node = helper.make_node("LRN", ["x"], ["y"], name="norm1", size=p.size, alpha=p.alpha, beta=p.beta, bias=p.bias)
    graph = helper.make_graph(
        [node],
        "lrn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))],
    )
    model = lrn_as_window_sum(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), sum_by)
    assert [n.op_type for n in model.graph.node].count("LRN") == 0
    assert all(n.name.startswith("norm1/") for n in model.graph.node)  # a profile counts them with norm1
    if edit is not None:
        edit(model)
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("sum_by", ["matmul", "conv"])
@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("size", [2, 4, 5])  # even sizes: the window leans forward (ONNX)
def test_the_window_sum_is_the_onnx_lrn(activations, name, size, sum_by):
    p = VARIANTS[name]
    p = LRNParams(size=size, alpha=p.alpha, beta=p.beta, bias=p.bias)
    ours = _window_sum_lrn(activations, p, sum_by=sum_by)
    np.testing.assert_allclose(ours, lrn_reference(activations, p), rtol=1e-5, atol=1e-6)
    if size % 2:
        np.testing.assert_allclose(ours, onnxruntime_lrn(activations, p), rtol=1e-5)


def test_the_window_sum_of_another_beta_uses_a_power(activations):
    p = LRNParams(size=5, alpha=1e-3, beta=0.6, bias=1.5)
    np.testing.assert_allclose(_window_sum_lrn(activations, p), lrn_reference(activations, p), rtol=1e-5, atol=1e-6)


def test_a_window_one_channel_off_is_caught(activations):
    """The planted fault: the band shifted by one channel (the window centred on the
    neighbour) — the same shapes and sparsity, another function."""
    from onnx import numpy_helper

    def shift(model):
        window = next(t for t in model.graph.initializer if t.name == "norm1/window")
        window.CopyFrom(numpy_helper.from_array(np.roll(numpy_helper.to_array(window), 1, axis=1), window.name))

    p = LRNParams(size=5, alpha=1e-3)
    assert np.abs(_window_sum_lrn(activations, p, shift) - lrn_reference(activations, p)).max() > 1e-3
