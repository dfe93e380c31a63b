"""The pictures: conv1's kernels as a grid (the 2012 paper's Figure 3), the
training curves (loss, top-1/top-5 on train and val, per epoch), the bench's
throughput/accuracy figure, the profile's per-layer bars and roofline, and a load
test's throughput and latency per concurrency level.

The sensitivity figure shows, per layer, the INT8 agreement alone and all-but-it and the
all-INT8 graph's SQNR.

The filter grid is drawn pixel-exact with Pillow: every kernel pixel becomes a
``scale`` x ``scale`` block, with no axes and no interpolation, so the PNG's size
is known from the kernel count alone. The curves use matplotlib's object API on
the Agg canvas: no display, no pyplot global state, safe inside training.
Both are written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from .files import atomic_output, check_png_path

if TYPE_CHECKING:
    from .bench.report import BenchReport, BenchRow
    from .profile.report import ProfileReport
    from .quantize.sensitivity import SensitivityReport
    from .serve.loadtest import LoadReport
    from .train.results import EpochMetrics

GRID_COLUMNS = 12  # 96 kernels -> 8 rows of 12
GRID_SCALE = 5  # 11x11 kernels -> 55x55 pixels
GRID_GAP = 2
GAP_COLOUR = 255


def filter_grid_size(
    count: int, kernel: int, columns: int = GRID_COLUMNS, scale: int = GRID_SCALE, gap: int = GRID_GAP
) -> tuple[int, int]:
    """(width, height) in pixels of the grid :func:`filter_grid` draws."""
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    cell = kernel * scale
    return columns * cell + (columns + 1) * gap, rows * cell + (rows + 1) * gap


def filter_grid(
    weight: torch.Tensor, columns: int = GRID_COLUMNS, scale: int = GRID_SCALE, gap: int = GRID_GAP
) -> Image.Image:
    """RGB image of first-layer kernels ``weight`` (out_C x 3 x kH x kW), row-major.

    Each kernel is min-max normalised on its own, over all three channels together,
    so its colours keep their balance; a constant kernel is drawn mid-grey.
    """
    kernels = weight.detach().float().cpu().numpy().transpose(0, 2, 3, 1)  # N, kH, kW, RGB
    low = kernels.min(axis=(1, 2, 3), keepdims=True)
    span = kernels.max(axis=(1, 2, 3), keepdims=True) - low
    normalised = np.where(span > 0, (kernels - low) / np.where(span > 0, span, 1), 0.5)
    pixels = np.round(normalised * 255).astype(np.uint8)
    pixels = pixels.repeat(scale, axis=1).repeat(scale, axis=2)

    count, cell_h, cell_w = pixels.shape[:3]
    columns = min(columns, count)
    width, height = filter_grid_size(count, weight.shape[2], columns, scale, gap)
    canvas = np.full((height, width, 3), GAP_COLOUR, dtype=np.uint8)
    for index, tile in enumerate(pixels):
        row, column = divmod(index, columns)
        top, left = gap + row * (cell_h + gap), gap + column * (cell_w + gap)
        canvas[top : top + cell_h, left : left + cell_w] = tile
    return Image.fromarray(canvas)


def save_png(figure: Figure, path: Path, option: str = "--plot") -> None:
    """A report's figure as the PNG ``option`` named, written atomically."""
    check_png_path(Path(path), option)
    with atomic_output(Path(path)) as tmp:
        figure.savefig(tmp, format="png")


def save_filter_grid(weight: torch.Tensor, path: Path) -> Image.Image:
    """Write :func:`filter_grid` of ``weight`` to ``path`` as PNG; return the image."""
    check_png_path(Path(path), "--filters")
    image = filter_grid(weight)
    with atomic_output(Path(path)) as tmp:
        image.save(tmp, format="PNG")
    return image


CURVES_SIZE_INCHES = (11.0, 4.0)
CURVES_DPI = 100


def training_curves(history: Sequence[EpochMetrics]) -> Figure:
    """Loss (left) and top-1/top-5 accuracy (right) per epoch, train and val."""
    figure = Figure(figsize=CURVES_SIZE_INCHES, dpi=CURVES_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    epochs = [m.epoch for m in history]
    # markers, because a one-epoch run is a single point per curve
    loss_axes.plot(epochs, [m.train_loss for m in history], "o-", label="train")
    loss_axes.plot(epochs, [m.val_loss for m in history], "s-", label="val")
    loss_axes.set(title="cross-entropy loss", xlabel="epoch", ylabel="loss")
    for split, marker in (("train", "o"), ("val", "s")):
        for k, style in (("top1", "-"), ("top5", "--")):
            values = [100 * getattr(m, f"{split}_{k}") for m in history]
            accuracy_axes.plot(epochs, values, marker + style, label=f"{split} top-{k[-1]}")
    accuracy_axes.set(title="accuracy", xlabel="epoch", ylabel="%", ylim=(0, 101))
    for axes in (loss_axes, accuracy_axes):
        # whole epochs only, with room either side so a single epoch sits mid-axis
        axes.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        axes.grid(alpha=0.3)
        axes.legend()
    return figure


def save_training_curves(history: Sequence[EpochMetrics], path: Path) -> None:
    figure = training_curves(history)
    with atomic_output(Path(path)) as tmp:
        figure.savefig(tmp, format="png")


def curves_writer(path: Path) -> Callable[[Sequence[EpochMetrics]], None]:
    """The epoch callback ``train()`` takes: redraw the curves at ``path`` each epoch."""
    return lambda history: save_training_curves(history, path)


def loadtest_figure(report: LoadReport, title: str) -> Figure:
    """Images/s (left) and latency p50/p90/p99 (right) against client concurrency."""
    figure = Figure(figsize=CURVES_SIZE_INCHES, dpi=CURVES_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    throughput_axes, latency_axes = figure.subplots(1, 2)
    rows = [row for row in report.rows if row.latency_ms is not None]
    levels = [row.concurrency for row in rows]
    throughput_axes.plot(levels, [row.images_per_s for row in rows], "o-")
    throughput_axes.set(title="throughput", xlabel="concurrent clients", ylabel="images/s", ylim=(0, None))
    for name, marker in (("p50", "o"), ("p90", "s"), ("p99", "^")):
        latency_axes.plot(levels, [getattr(row.latency_ms, name) for row in rows], marker + "-", label=name)
    latency_axes.set(title="latency", xlabel="concurrent clients", ylabel="ms", ylim=(0, None))
    latency_axes.legend()
    for axes in (throughput_axes, latency_axes):
        axes.set_xscale("log", base=2)  # levels are usually 1, 4, 16
        axes.set_xticks(levels, [str(level) for level in levels])
        axes.grid(alpha=0.3)
    figure.suptitle(title)
    return figure


def save_loadtest_figure(report: LoadReport, title: str, path: Path) -> None:
    figure = loadtest_figure(report, title)
    save_png(figure, path)


BENCH_FIGURE_INCHES = (8.0, 5.0)
BENCH_FIGURE_DPI = 100


def bench_figure(report: BenchReport) -> Figure:
    """Throughput against batch per backend/precision for a sweep; for one batch,
    top-1 accuracy against throughput (the speed/accuracy trade-off)."""
    figure = Figure(figsize=BENCH_FIGURE_INCHES, dpi=BENCH_FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    measured = report.measured
    series: dict[str, list[BenchRow]] = {}
    for row in measured:
        series.setdefault(f"{row.backend} {row.precision} ({row.device})", []).append(row)
    if len(report.config.batches) > 1:
        for label, rows in series.items():
            points = sorted((r.batch, r.throughput_ips) for r in rows if r.throughput_ips is not None)
            axes.plot([batch for batch, _ in points], [ips for _, ips in points], "o-", label=label)
        axes.set_xscale("log", base=2)
        axes.set_xticks(report.config.batches, [str(b) for b in report.config.batches])
        axes.set(title="throughput against batch size", xlabel="batch", ylabel="images / s")
    else:
        for label, rows in series.items():
            scores = [
                (r.throughput_ips, 100 * r.top1) for r in rows if r.throughput_ips is not None and r.top1 is not None
            ]
            axes.scatter([ips for ips, _ in scores], [top1 for _, top1 in scores], label=label, s=60)
        axes.set(
            title=f"top-1 against throughput at batch {report.config.batches[0]}",
            xlabel="images / s",
            ylabel="top-1 on held-out val (%)",
        )
    if not measured:
        axes.text(0.5, 0.5, "no backend could be measured here", ha="center", va="center", transform=axes.transAxes)
    else:
        axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    return figure


def save_bench_plot(report: BenchReport, path: Path) -> None:
    save_png(bench_figure(report), path)


def sensitivity_figure(report: SensitivityReport) -> Figure:
    """Per layer in network order: top-1 agreement with that layer alone in INT8 and
    with every layer but it in INT8 (one bar pair per layout), and the all-INT8 graph's
    SQNR of each layer's output on a second axis; the most sensitive layer marked."""
    figure = Figure(figsize=BENCH_FIGURE_INCHES, dpi=BENCH_FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    agreement, sqnr = figure.subplots(2, 1, sharex=True)
    layers = sorted(
        report.layers, key=lambda entry: int(entry.layer.removeprefix("conv").removeprefix("fc"))
    )  # conv1 .. fc8
    names = [entry.layer for entry in layers]
    positions = np.arange(len(names))
    width = 0.8 / (2 * len(report.layouts))
    for index, (layout, kind) in enumerate((lo, k) for lo in report.layouts for k in ("alone", "all_but")):
        values = [100 * getattr(entry, kind)[layout].agreement for entry in layers]
        label = f"{layout}: {'only this layer' if kind == 'alone' else 'all but this layer'} in INT8"
        agreement.bar(positions + (index - len(report.layouts) + 0.5) * width, values, width, label=label)
    agreement.set(
        ylabel="top-1 agreement with FP32 (%)", title=f"INT8 sensitivity, most sensitive: {report.ranking[0]}"
    )
    agreement.set_ylim(0, 135)  # room above the bars for the legend
    agreement.legend(fontsize="x-small", ncols=2, loc="upper center")
    for layout in report.layouts:
        values = [min(entry.sqnr_db[layout], 99.0) for entry in layers]
        sqnr.plot(positions, values, "o-", label=f"{layout}, all-INT8")
    sqnr.set(ylabel="output SQNR (dB)", xlabel="layer")
    sqnr.set_xticks(positions, names)
    sqnr.legend(fontsize="small")
    for axes in (agreement, sqnr):
        axes.grid(alpha=0.3)
    return figure


def save_sensitivity_plot(report: SensitivityReport, path: Path) -> None:
    save_png(sensitivity_figure(report), path)


def profile_figure(report: ProfileReport) -> Figure:
    """One panel of per-layer bars (ms per batch) for each row, and a roofline: every
    timed weighted layer at its arithmetic intensity and achieved rate, under the FP32
    and INT8 roofs (the fastest dense kernels and the copy bandwidth measured in the same run,
    the median over its rows)."""
    panels = len(report.rows) + 1
    columns = min(panels, 3)
    lines = math.ceil(panels / columns)
    figure = Figure(figsize=(5.0 * columns, 4.0 * lines), dpi=BENCH_FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(lines, columns, squeeze=False).ravel()
    for axes, row in zip(grid, report.rows, strict=False):
        names = [layer.layer for layer in row.layers]
        axes.barh(names, [layer.ms for layer in row.layers], color="tab:blue")
        axes.invert_yaxis()
        axes.set(
            title=f"{row.backend} {row.precision} batch {row.batch}: {row.end_to_end_ms:.1f} ms end to end",
            xlabel="ms per batch (profiler)",
        )
        axes.title.set_fontsize("small")
    roofline = grid[len(report.rows)]
    limits = report.limits
    intensities = np.logspace(-1, 4, 200)
    for name, peak in (("FP32", limits["fp32_gflops"]), ("INT8", limits["int8_gops"])):
        roofline.plot(intensities, np.minimum(peak, limits["copy_gbps"] * intensities), label=f"{name} roof")
    for row in report.rows:
        points = [
            (layer.intensity, 2 * layer.gmacs_per_s)
            for layer in row.layers
            if layer.intensity and layer.gmacs_per_s and row.device == "cpu"
        ]
        if points:
            roofline.scatter(*zip(*points, strict=True), s=20, label=f"{row.backend} {row.precision} @{row.batch}")
    roofline.set(xscale="log", yscale="log", xlabel="operations per byte", ylabel="G(FL)OP/s", title="roofline")
    roofline.legend(fontsize="x-small")
    roofline.grid(alpha=0.3)
    for axes in grid[panels:]:
        axes.set_visible(False)
    return figure


def save_profile_plot(report: ProfileReport, path: Path) -> None:
    save_png(profile_figure(report), path)
