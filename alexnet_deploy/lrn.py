"""Local response normalisation (LRN): the one convention that the model, the ONNX
export, the Triton plugin kernel and every reference agree on.

Convention (ONNX ``LRN``, which PyTorch and Caffe share for odd sizes)::

    y[n, c, h, w] = x[n, c, h, w] / (bias + alpha / size * S) ** beta
    S = sum of x[n, j, h, w] ** 2 for j in window(c), channels outside [0, C) skipped
    window(c) = [c - floor((size - 1) / 2), c + ceil((size - 1) / 2)]

The paper's defaults, derived. Krizhevsky et al. (2012, Section 3.3) write::

    b[c] = a[c] / (k + alpha_paper * sum_{j in window(c)} a[j] ** 2) ** beta
    n = 5, k = 2, alpha_paper = 1e-4, beta = 0.75

with no ``1 / n`` in front of the sum. ONNX ``LRN``, ``torch.nn.LocalResponseNorm``
and Caffe's LRN layer all multiply the sum by ``alpha / size``, so the same function
in our convention needs ``alpha / 5 = 1e-4``, i.e. **alpha = 5e-4**, bias (k) 2.
Side by side, for size 5 and beta 0.75::

    paper (no 1/n)         alpha 1e-4, k 2  ->  k + 1e-4 * S
    ONNX/PyTorch (1/n)     alpha 5e-4, k 2  ->  k + 5e-4 / 5 * S = k + 1e-4 * S  (ours)
    BVLC Caffe reference   alpha 1e-4, k 1  ->  k + 1e-4 / 5 * S  (a different LRN)

Checkpoints store their ``LRNParams``, so a model trained with another setting (such
as this project's earlier alpha 1e-4, k 2) keeps its own LRN when loaded and exported.

For even sizes the ONNX window leans forward (size 4: [c-1, c+2]) whereas
``torch.nn.functional.local_response_norm`` leans backward ([c-2, c+1]); we follow
ONNX everywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

CONVENTION = "onnx-lrn: x / (bias + alpha/size * sum_window x^2)^beta, window [c-floor((size-1)/2), c+ceil((size-1)/2)]"


@dataclass(frozen=True)
class LRNParams:
    """LRN hyper-parameters in our (ONNX) convention; the defaults are the paper's
    n=5, alpha=1e-4 (its formula), beta=0.75, k=2, i.e. alpha = 5 * 1e-4 here."""

    size: int = 5
    alpha: float = 5e-4
    beta: float = 0.75
    bias: float = 2.0

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def window_before(self) -> int:
        """Channels summed before ``c``: floor((size - 1) / 2)."""
        return (self.size - 1) // 2

    @property
    def window_after(self) -> int:
        """Channels summed after ``c``: ceil((size - 1) / 2)."""
        return self.size - 1 - self.window_before


def window_sum(t: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """``out[:, c] = sum of t[:, j] for j in [c - before, c + after]`` (channels outside
    [0, C) skipped), as in-place adds of shifted channel slices: one pass per window
    position, no padded copy."""
    channels = t.shape[1]
    out = t.clone()
    for offset in range(1, min(before, channels - 1) + 1):  # channel c - offset
        out[:, offset:] += t[:, : channels - offset]
    for offset in range(1, min(after, channels - 1) + 1):  # channel c + offset
        out[:, : channels - offset] += t[:, offset:]
    return out


class _LocalResponseNormFunction(torch.autograd.Function):
    """LRN with its gradient written out, because autograd through the obvious
    formulation (square, pad, ``avg_pool3d`` over channels, pow, divide) made LRN about
    half of a CPU training step: it saves and revisits every intermediate of the
    96x55x55 and 256x27x27 activations. Measured per LRN at batch 32 on 2 cores, forward
    + backward: 322 -> 72 ms after conv1, 132 -> 27 ms after conv2 (docs/training.md).

    With ``d = bias + alpha/size * S`` (S the windowed sum of squares) and ``y = x d^-beta``::

        dL/dx[c] = g[c] d[c]^-beta - 2 beta alpha/size * x[c] * sum_{c' : c in window(c')} g[c'] x[c'] d[c']^(-beta-1)

    whose sum runs over the mirrored window. ``tests/test_lrn.py`` checks it with
    ``torch.autograd.gradcheck`` in float64, even sizes included."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, params: LRNParams) -> torch.Tensor:
        divisor = window_sum(x.square(), params.window_before, params.window_after)
        divisor.mul_(params.alpha / params.size).add_(params.bias)
        scale = divisor.pow(-params.beta)
        ctx.save_for_backward(x, divisor, scale)
        ctx.params = params
        return x * scale

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        x, divisor, scale = ctx.saved_tensors
        params: LRNParams = ctx.params
        through_sum = grad * x
        through_sum.mul_(scale).div_(divisor)
        mirrored = window_sum(through_sum, params.window_after, params.window_before)
        grad_x = grad * scale
        grad_x.addcmul_(x, mirrored, value=-2.0 * params.beta * params.alpha / params.size)
        return grad_x, None


def local_response_norm(x: torch.Tensor, params: LRNParams = LRNParams()) -> torch.Tensor:
    """LRN over dim 1 of an NCHW tensor, in our (ONNX) convention.

    The sum of squares is taken in float32 even for half inputs: x**2 overflows
    float16 above |x| ~ 256.
    """
    wide = x.to(torch.promote_types(x.dtype, torch.float32))  # float64 stays float64 (gradcheck)
    return _LocalResponseNormFunction.apply(wide, params).to(x.dtype)


class LocalResponseNorm(nn.Module):
    """AlexNet's LRN layer; ``forward`` is :func:`local_response_norm`.

    Export swaps how the op is expressed (custom plugin node or ONNX ``LRN``) and the
    CUDA torch runner swaps in the Triton kernel, but the maths stays this function.
    """

    def __init__(self, params: LRNParams = LRNParams()) -> None:
        super().__init__()
        self.params = params

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(x, self.params)

    def extra_repr(self) -> str:
        p = self.params
        return f"size={p.size}, alpha={p.alpha}, beta={p.beta}, bias={p.bias}"


class OpaqueLRN(nn.Module):
    """LRN as one call of a ``torch.library`` custom op ``op(x, size, alpha, beta, bias)``.

    Opaque to tracers: the ONNX exporter keeps it as one node, and ``torch.compile``
    calls a Triton launcher as it is instead of tracing into it.
    """

    def __init__(self, params: LRNParams, op) -> None:
        super().__init__()
        self.params = params
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.params
        return self.op(x, p.size, p.alpha, p.beta, p.bias)


def replace_lrn(model: nn.Module, op) -> nn.Module:
    """Swap every :class:`LocalResponseNorm` of ``model`` (in place) for an
    :class:`OpaqueLRN` calling ``op``; returns ``model``."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, LocalResponseNorm):
                setattr(parent, name, OpaqueLRN(child.params, op))
    return model


def lrn_reference(x: np.ndarray, params: LRNParams = LRNParams()) -> np.ndarray:
    """Direct transcription of the ONNX ``LRN`` specification in float64.

    Deliberately written loop-by-channel, with nothing shared with the torch version,
    so tests compare two independent implementations.
    """
    x64 = np.asarray(x, dtype=np.float64)
    channels = x64.shape[1]
    square_sum = np.zeros_like(x64)
    for c in range(channels):
        low = max(0, c - params.window_before)
        high = min(channels - 1, c + params.window_after)
        square_sum[:, c] = np.sum(x64[:, low : high + 1] ** 2, axis=1)
    return (x64 / (params.bias + params.alpha / params.size * square_sum) ** params.beta).astype(x.dtype)
