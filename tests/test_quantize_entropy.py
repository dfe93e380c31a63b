"""``entropy_amax`` against NVIDIA's reference entropy calibration, number for number.

The reference is TensorRT-Model-Optimizer's ``_compute_amax_entropy`` in
``modelopt/torch/quantization/calib/histogram.py`` (read at commit 5a4242f, Dec 2025),
the KL rule of TensorRT's legacy entropy calibrator that NVIDIA keeps in its
PyTorch quantization path. modelopt is not a dependency, so when it is not importable
the test runs an independent transcription of that algorithm, written here as a plain
per-candidate loop over ``np.digitize`` and ``np.add.at`` (ours computes the level
starts in integer arithmetic and sums with cumulative sums and ``reduceat``, so the
two share no code):

* the zero bin takes its neighbour's count;
* for every candidate ``i`` of 128 .. 2048 bins, bins ``[0, i)`` are merged into 128
  levels by ``np.digitize`` against ``np.linspace(0, i, 129)``; empty bins belong to no
  level; each non-empty bin gets its level's mean count (Q);
* P is bins ``[0, i)`` with everything above folded into bin ``i - 1``;
* the divergence is KL(P || Q) of the normalised distributions, infinite where P has
  mass and Q none (what ``scipy.stats.entropy`` returns);
* the last candidate with the smallest divergence wins; amax is the edge of bin ``i``.

What a pass proves: on the same |x| histogram (gaussian, laplace, ReLU'd gaussian with
its zero spike, and both with far outliers), our ``entropy_amax`` picks the same clip
point as that algorithm: the same amax within one bin width (they agree exactly today;
the bin of slack is for a float tie between equal divergences summed in another order),
and the divergence at our clip point equals the reference minimum to 1e-9. It does not
prove that the histograms we collect equal ModelOpt's (ours: two passes, [0, max] in
2048 bins; theirs grows its bins batch by batch), nor anything about TensorRT's own,
closed-source calibrator beyond what NVIDIA's reference encodes.
"""

import numpy as np
import pytest

from alexnet_deploy.quantize.calibration import (
    ENTROPY_TARGET_BINS,
    HISTOGRAM_BINS,
    TensorStatistics,
    entropy_amax,
)


def reference_divergences(histogram: np.ndarray, levels: int = ENTROPY_TARGET_BINS) -> dict[int, float]:
    """KL(P || Q) of every candidate bin count, as ModelOpt's ``_compute_amax_entropy``
    defines it (see the module docstring)."""
    counts = histogram.astype(np.float64).copy()
    counts[0] = counts[1]
    divergences = {}
    for i in range(levels, len(counts) + 1):
        level_of = np.digitize(np.arange(i), np.linspace(0, i, levels + 1)) - 1
        level_of[counts[:i] == 0] = -1
        member = level_of >= 0
        level_sum = np.zeros(levels)
        level_bins = np.zeros(levels)
        np.add.at(level_sum, level_of[member], counts[:i][member])
        np.add.at(level_bins, level_of[member], 1.0)
        q = np.zeros(i)
        q[member] = level_sum[level_of[member]] / level_bins[level_of[member]]
        p = counts[:i].copy()
        p[-1] += counts[i:].sum()
        p, q = p / p.sum(), q / q.sum()
        mass = p > 0
        if np.any(q[mass] == 0):
            divergences[i] = np.inf
        else:
            divergences[i] = float(np.sum(p[mass] * np.log(p[mass] / q[mass])))
    return divergences


def reference_amax(histogram: np.ndarray, amax: float) -> tuple[float, dict[int, float]]:
    """ModelOpt's pick: the last of the smallest divergences, at that bin's edge."""
    divergences = reference_divergences(histogram)
    best = min(divergences.values())
    chosen = max(i for i, d in divergences.items() if d == best)
    edges = np.linspace(0, amax, len(histogram) + 1)
    return float(edges[chosen]), divergences


def magnitudes(kind: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    n = 400_000
    return {
        "gaussian": np.abs(rng.normal(0.0, 1.0, n)),
        "laplace": np.abs(rng.laplace(0.0, 1.0, n)),
        "relu_gaussian": np.maximum(rng.normal(0.3, 1.0, n), 0.0),  # a spike of exact zeros
        "gaussian_outliers": np.concatenate([np.abs(rng.normal(0.0, 1.0, n)), rng.uniform(15.0, 40.0, 40)]),
        "laplace_outliers": np.concatenate([np.abs(rng.laplace(0.0, 1.0, n)), [60.0, 90.0]]),
    }[kind]


KINDS = ["gaussian", "laplace", "relu_gaussian", "gaussian_outliers", "laplace_outliers"]


@pytest.mark.parametrize("kind", KINDS)
def test_entropy_amax_matches_modelopts_algorithm(kind):
    values = magnitudes(kind)
    amax = float(values.max())
    histogram = np.histogram(values, HISTOGRAM_BINS, (0.0, amax))[0]
    bin_width = amax / HISTOGRAM_BINS

    ours = entropy_amax(TensorStatistics(amax, histogram))
    expected, divergences = reference_amax(histogram, amax)

    assert ours == pytest.approx(expected, abs=bin_width)
    our_bins = round(ours / bin_width)
    assert divergences[our_bins] == pytest.approx(min(divergences.values()), rel=1e-9)
    # the clip point is a real choice, not the trivial "keep everything", where outliers make it one
    if kind.endswith("outliers"):
        assert ours < 0.5 * amax


@pytest.mark.parametrize("kind", KINDS)
def test_entropy_amax_matches_modelopts_own_function(kind):
    """The same histograms through NVIDIA ModelOpt's ``_compute_amax_entropy`` itself (the
    ``[dev]`` extra installs nvidia-modelopt; without it this is a visible skip, never a
    silent pass)."""
    histogram_module = pytest.importorskip(
        "modelopt.torch.quantization.calib.histogram",
        reason="nvidia-modelopt is not installed (pip install -e '.[dev]')",
    )
    values = magnitudes(kind)
    amax = float(values.max())
    histogram = np.histogram(values, HISTOGRAM_BINS, (0.0, amax))[0]
    edges = np.linspace(0, amax, HISTOGRAM_BINS + 1)
    theirs = float(histogram_module._compute_amax_entropy(histogram.copy(), edges, num_bits=8, unsigned=False))
    assert entropy_amax(TensorStatistics(amax, histogram)) == pytest.approx(theirs, abs=amax / HISTOGRAM_BINS)
