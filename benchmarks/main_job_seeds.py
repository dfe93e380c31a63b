"""The main job's training, seed by seed: val top-1 per epoch, seconds, and the machine.

Runs ``alexnet-deploy train`` with its defaults (the README's first command's training
step) once per seed, each in its own process and output folder, and prints the table
docs/training.md quotes: seed, val top-1 after the last epoch (and per epoch), epochs,
seconds, and the CPU it ran on with the instruction-set features that change float
kernels (AVX2, AVX-512, AVX512-BF16, AMX).

``--isa avx2`` caps the kernels torch dispatches to at AVX2 on a machine that has more:
``ATEN_CPU_CAPABILITY=avx2`` for ATen's vectorised kernels, ``ONEDNN_MAX_CPU_ISA=AVX2``
for oneDNN's convolutions and ``MKL_ENABLE_INSTRUCTIONS=AVX2`` for MKL's matmuls. That is a stand-in for an AVX2-only CPU, named as
such in the output: it runs AVX2 code paths, with this machine's cores, caches and
clock, so its figures are the accuracy an AVX2 machine computes, not its speed.

``--figure PNG`` draws the held-out digits that most of the seeds' models get wrong, as
the 8x8 original and as the 227x227 crop the model sees, with label and majority answer:
what stands between these runs and 100%.

    python benchmarks/main_job_seeds.py [--seeds 0-4] [--isa native|avx2] [--json PATH] [--figure PNG]
                                        [-- extra train options]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ISA_ENVIRONMENTS = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}
FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def cpu_description() -> dict:
    """The CPU model, its ISA features that matter for float kernels, and its core count."""
    model, flags = platform.processor() or "unknown", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        text = cpuinfo.read_text()
        if found := re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE):
            model = found.group(1).strip()
        if found := re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE):
            flags = set(found.group(1).split())
    return {"model": model, "features": [f for f in FEATURES if f in flags], "cores": os.cpu_count()}


def parse_seeds(text: str) -> list[int]:
    if "-" in text:
        first, last = (int(part) for part in text.split("-", 1))
        return list(range(first, last + 1))
    return [int(part) for part in text.split(",")]


def run_seed(seed: int, isa: str, extra: list[str], folder: Path) -> dict:
    output = folder / f"seed{seed}" / "alexnet.pt"
    output.parent.mkdir(parents=True)
    command = [sys.executable, "-m", "alexnet_deploy", "train", "--seed", str(seed), "--output", str(output), *extra]
    environment = dict(os.environ, **ISA_ENVIRONMENTS[isa])
    started = time.perf_counter()
    result = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"error: seed {seed} failed: {result.stderr.strip().splitlines()[-1:]}")
    history = [json.loads(line) for line in output.with_suffix(".metrics.jsonl").read_text().splitlines()]
    return {
        "seed": seed,
        "val_top1": history[-1]["val_top1"],
        "val_top1_per_epoch": [m["val_top1"] for m in history],
        "epochs": len(history),
        "train_seconds": sum(m["seconds"] for m in history),
        "command_seconds": seconds,
    }


def misclassified(checkpoints: list[Path]) -> tuple[list[dict[int, int]], object, object]:
    """Per checkpoint, val index -> its wrong answer; and the val images (PIL, preprocessed)."""
    import numpy as np
    import torch

    from alexnet_deploy.checkpoint import load_checkpoint
    from alexnet_deploy.data.preprocessing import held_out_images
    from alexnet_deploy.data.sources import load_images

    first = load_checkpoint(checkpoints[0])
    val = first.split.apply(load_images(first.data_source))["val"]
    images, labels = held_out_images(first.data_source, first.split, first.preprocessing, "val")
    wrong = []
    for path in checkpoints:
        with torch.no_grad():
            predicted = load_checkpoint(path).build_model()(torch.from_numpy(images)).argmax(1).numpy()
        wrong.append({int(i): int(predicted[i]) for i in np.nonzero(predicted != labels)[0]})
    return wrong, val, images


def draw_hard_digits(wrong: list[dict[int, int]], val, images, figure: Path) -> list[int]:
    """Save the figure of val digits that more than half of the models get wrong."""
    from collections import Counter

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    answers: dict[int, list[int]] = {}
    for per_model in wrong:
        for index, answer in per_model.items():
            answers.setdefault(index, []).append(answer)
    hard = sorted((i for i, a in answers.items() if len(a) > len(wrong) / 2), key=lambda i: (-len(answers[i]), i))
    columns = max(1, len(hard))
    fig, axes = plt.subplots(2, columns, figsize=(1.5 * columns, 3.4), squeeze=False)
    for column, index in enumerate(hard):
        said = Counter(answers[index]).most_common(1)[0][0]
        top, bottom = axes[0][column], axes[1][column]
        top.imshow(np.asarray(val.image(index)), cmap="gray")
        title = f"label {val.classes[int(val.labels[index])]}\nsaid {val.classes[said]} ({len(answers[index])}/{len(wrong)})"
        top.set_title(title, fontsize=8)
        bottom.imshow(images[index, 0], cmap="gray")
        top.axis("off")
        bottom.axis("off")
    fig.suptitle("held-out digits most seeds get wrong: the 8x8 image, and the 227x227 crop the model sees", fontsize=9)
    fig.tight_layout()
    fig.savefig(figure, dpi=80)
    return hard


def torch_kernels(isa: str) -> str:
    """What torch reports it dispatches to under ``isa``'s environment."""
    probe = "import torch; print(torch.__version__, torch.backends.cpu.get_cpu_capability())"
    environment = dict(os.environ, **ISA_ENVIRONMENTS[isa])
    result = subprocess.run([sys.executable, "-c", probe], env=environment, capture_output=True, text=True, check=True)
    return result.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-4", help="a range (0-4) or a list (0,3)")
    parser.add_argument("--isa", choices=sorted(ISA_ENVIRONMENTS), default="native")
    parser.add_argument("--json", type=Path, help="also write the rows and the machine here")
    parser.add_argument("--figure", type=Path, help="PNG of the held-out digits most seeds get wrong")
    parser.add_argument("extra", nargs="*", help="options passed on to `alexnet-deploy train` (after --)")
    args = parser.parse_args()

    machine = cpu_description() | {"isa": args.isa, "torch": torch_kernels(args.isa)}
    if args.isa != "native":
        machine["stand_in"] = f"{args.isa.upper()} kernels forced on this CPU ({', '.join(ISA_ENVIRONMENTS[args.isa])})"
    print(f"machine: {json.dumps(machine)}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="main-job-seeds-") as folder:
        for seed in parse_seeds(args.seeds):
            rows.append(run_seed(seed, args.isa, args.extra, Path(folder)))
            print(json.dumps(rows[-1]), flush=True)
        wrong, val, images = misclassified([Path(folder) / f"seed{row['seed']}" / "alexnet.pt" for row in rows])
        for row, per_model in zip(rows, wrong, strict=True):
            row["wrong_val_indices"] = sorted(per_model)
        if args.figure:
            hard = draw_hard_digits(wrong, val, images, args.figure)
            print(f"figure {args.figure}: val digits {hard} are wrong in most seeds' models")

    print(
        f"\n{machine['model']} ({', '.join(machine['features'])}; {machine['cores']} cores), torch {machine['torch']}"
    )
    print("| seed | val top-1 | per epoch | epochs | train s | command s | wrong val images |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        per_epoch = " → ".join(f"{100 * v:.1f}" for v in row["val_top1_per_epoch"])
        print(
            f"| {row['seed']} | **{100 * row['val_top1']:.2f}%** | {per_epoch} | {row['epochs']} "
            f"| {row['train_seconds']:.0f} | {row['command_seconds']:.0f} | {len(row['wrong_val_indices'])} |"
        )
    top1 = [row["val_top1"] for row in rows]
    print(
        f"\nval top-1 over {len(rows)} seeds: min {100 * min(top1):.2f}%, median {100 * statistics.median(top1):.2f}%, "
        f"max {100 * max(top1):.2f}%"
    )
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
