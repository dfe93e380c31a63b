"""CLI behaviour: commands listed, and every bad input gives one clear line on
stderr, a non-zero exit, no traceback and no half-written checkpoint."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import assert_one_line_error, write_image_folder
from typer.testing import CliRunner

from alexnet_deploy.checkpoint import load_checkpoint
from alexnet_deploy.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_help_lists_the_pipeline_commands():
    result = run("--help")
    assert result.exit_code == 0
    for command in ("train", "export", "build", "bench", "profile", "doctor", "info"):
        assert command in result.stdout


def test_doctor_reports_versions_and_steps():
    result = run("doctor", "--json")
    assert result.exit_code == 0
    assert '"torch"' in result.stdout and "TensorRT engine build" in result.stdout


def test_train_writes_a_loadable_checkpoint(tmp_path):
    output = tmp_path / "model.pt"
    result = run(
        "train", "--epochs", "1", "--limit", "64", "--width", "0.0625", "--batch-size", "32", "--output", str(output)
    )
    assert result.exit_code == 0, result.output
    assert output.is_file() and "val top-1" in result.stdout
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    checkpoint = load_checkpoint(output)  # loadable: checked, built, and the run's own
    model = checkpoint.build_model()
    assert checkpoint.config.width == 0.0625 and checkpoint.split.limit == 64
    assert model.fc8.out_features == len(checkpoint.classes) == 10
    assert f"val top-1 {checkpoint.metrics['val_top1']:.2%}" in result.stdout


@pytest.mark.parametrize(
    "setup, fragment",
    [
        (lambda d: d / "missing", "does not exist"),
        (lambda d: d, "no class sub-folders"),
        (lambda d: (write_image_folder(d), (d / "class_7").mkdir())[0], "class_7 has no images"),
        (
            lambda d: (write_image_folder(d), (d / "class_0" / "bad.png").write_bytes(b"\x89PNG garbage"))[0],
            "cannot read image",
        ),
    ],
    ids=["missing-dir", "empty-dir", "empty-class", "corrupt-image"],
)
def test_train_rejects_bad_data(tmp_path, setup, fragment):
    data = tmp_path / "data"
    data.mkdir()
    output = tmp_path / "out.pt"
    result = run("train", "--data", str(setup(data)), "--output", str(output), "--epochs", "1", "--width", "0.0625")
    assert_one_line_error(result, fragment)
    assert not output.exists()


def test_train_rejects_unknown_device(tmp_path):
    assert_one_line_error(
        run("train", "--device", "tpu", "--output", str(tmp_path / "m.pt")), "'tpu' is not one of 'auto', 'cpu', 'cuda'"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_train_rejects_cuda_without_gpu(tmp_path):
    assert_one_line_error(run("train", "--device", "cuda", "--output", str(tmp_path / "m.pt")), "no CUDA GPU")


def test_train_rejects_output_in_missing_directory(tmp_path):
    assert_one_line_error(run("train", "--output", str(tmp_path / "nope" / "m.pt")), "does not exist")


def test_resume_rejects_checkpoint_trained_on_other_classes(tmp_path):
    data = write_image_folder(tmp_path / "data", classes=2, per_class=6)
    output = tmp_path / "m.pt"
    common = ["--output", str(output), "--epochs", "1", "--width", "0.0625", "--batch-size", "4"]
    assert run("train", "--data", str(data), *common).exit_code == 0
    result = run("train", "--resume", "--limit", "64", "--epochs", "2", *common)
    assert_one_line_error(result, "was trained on classes")


def test_resume_rejects_a_foreign_file(tmp_path):
    output = tmp_path / "m.pt"
    output.write_bytes(b"definitely not a checkpoint")
    output.with_suffix(".state.pt").write_bytes(b"nor this")
    result = run("train", "--resume", "--output", str(output), "--epochs", "2")
    assert_one_line_error(result, "m.state.pt is not an alexnet-deploy resume state")


def test_export_writes_validated_onnx(tiny_checkpoint, tmp_path):
    output = tmp_path / "a.onnx"
    result = run("export", "--checkpoint", str(tiny_checkpoint), "--output", str(output))
    assert result.exit_code == 0, result.output
    assert output.is_file() and "top-1 agreement 100.00%" in result.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--checkpoint", "{tmp}/missing.pt"], "not found"),
        (["--checkpoint", "{tmp}/junk.pt"], "is not an alexnet-deploy checkpoint"),
        (["--opset", "13"], "needs opset 18"),
        (["--output", "{tmp}/no/such/dir/a.onnx"], "does not exist"),
        (["--output", "{tmp}/junk.pt/a.onnx"], "does not exist"),
        (["--lrn", "builtin"], "'builtin' is not one of 'plugin', 'native'"),  # Typer checks the Enum
    ],
    ids=["missing", "not-a-checkpoint", "opset", "missing-dir", "parent-is-file", "lrn-mode"],
)
def test_export_rejects_bad_input_without_partial_files(tiny_checkpoint, tmp_path, args, fragment):
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04 not torch")
    defaults = {"--checkpoint": str(tiny_checkpoint), "--output": str(tmp_path / "out.onnx")}
    given = dict(zip(args[::2], [a.format(tmp=tmp_path) for a in args[1::2]], strict=True))
    result = run("export", *[x for kv in (defaults | given).items() for x in kv])
    assert_one_line_error(result, fragment)
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*.tmp"))


def test_doctor_names_the_onnxruntime_gpu_conflict_with_its_fix():
    from alexnet_deploy.doctor import install_problems

    both = {"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.22.0"}
    (problem,) = install_problems(both.get)
    assert "onnxruntime 1.32.0 and onnxruntime-gpu 1.22.0" in problem
    assert "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu" in problem
    assert install_problems({"onnxruntime": "1.32.0"}.get) == []


def test_gpu_extra_never_installs_onnxruntime_gpu_beside_onnxruntime():
    """Both wheels ship the `onnxruntime` package directory; the base install has onnxruntime."""
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
    assert any(dep.startswith("onnxruntime") for dep in project["dependencies"])
    assert not any(dep.startswith("onnxruntime-gpu") for dep in project["optional-dependencies"]["gpu"])


def test_doctor_takes_the_gpu_from_the_cuda_driver(monkeypatch):
    """A CPU build of torch on a GPU machine sees no GPU; the CUDA driver does."""
    from alexnet_deploy import doctor
    from alexnet_deploy.cuda_driver import CudaDevice

    monkeypatch.setattr(doctor, "cuda_device", lambda: CudaDevice("NVIDIA H100 80GB HBM3", (9, 0), (12, 8)))
    assert doctor.diagnose().gpu == "NVIDIA H100 80GB HBM3 (sm_90, CUDA driver 12.8)"


def test_fp16_training_on_cpu_is_one_error_line(tmp_path):
    result = run("train", "--precision", "fp16", "--device", "cpu", "--output", str(tmp_path / "m.pt"))
    assert_one_line_error(result, "--precision fp16 needs a CUDA device")
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize(
    "command, choices",
    [
        ("train", ["<fast|paper>", "<cosine|plateau|step>", "<auto|cpu|cuda>", "<fp32|bf16|fp16>"]),
        ("export", ["<plugin|native>"]),
        ("build", ["<max|percentile|entropy>"]),
        (
            "bench",
            ["<auto|cpu|cuda>", "tensorrt, onnxruntime, openvino, torch, torch-compile", "fp32, fp16, bf16, int8"],
        ),
        ("predict", ["<onnxruntime|openvino|torch|tensorrt>", "<fp32|fp16|int8>", "<http|grpc>"]),
        ("repository", ["<stock|local>"]),
        ("serve", ["<onnxruntime|openvino|tensorrt>", "<fp32|fp16|int8>"]),
        ("loadtest", ["<http|grpc>"]),
    ],
)
def test_help_lists_every_choice_from_its_enum(command, choices):
    text = " ".join(CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "250"}).output.split())
    for choice in choices:
        assert choice in text, f"{command} --help lacks {choice}"


HELP_AND_TYPO = """
import json, sys
import typer
from alexnet_deploy.cli import app
codes = {}
for args in [["--help"], *([name, "--help"] for name in typer.main.get_command(app).commands), ["trian"]]:
    try:
        app(args, prog_name="alexnet-deploy")
    except SystemExit as exit:
        codes[" ".join(args)] = exit.code
print(json.dumps({"codes": codes, "heavy": [m for m in ("torch", "onnx", "onnxruntime") if m in sys.modules]}))
"""


def test_help_imports_no_torch():
    """The commands import their library lazily: ``--help`` of the app and of every
    command (and a typo) run, and stay instant: none of them imports torch or onnx."""
    import json

    done = subprocess.run([sys.executable, "-c", HELP_AND_TYPO], capture_output=True, text=True, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    helps = {args: code for args, code in report["codes"].items() if args.endswith("--help")}
    assert len(helps) >= 13 and set(helps.values()) == {0}, report["codes"]  # the app and its 12 commands
    assert report["codes"]["trian"] == 2
    assert report["heavy"] == []
