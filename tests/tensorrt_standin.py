"""TensorRT's real Python layer, made importable on a machine without TensorRT's C++ core.

What is real: NVIDIA's official ``tensorrt_cu12_bindings`` / ``tensorrt_cu13_bindings``
wheels from the package index -- the pybind module ``tensorrt.so`` (every enum, struct
and plugin interface of that release) and the pure-Python ``tensorrt.plugin`` package
that registers, autotunes and AOT-compiles Python plugins.

What stands in, and only that:

* **The C++ core's 9 entry points.** ``tensorrt.so`` links libnvinfer, libnvinfer_plugin
  and libnvonnxparser for exactly nine C symbols (``createInferBuilder_INTERNAL``, ...,
  ``getNvOnnxParserVersion``). ``CORE_STANDIN_C`` defines them; each reports on stderr
  that it needs the real core and returns null, so ``trt.Builder()`` fails exactly where
  the real core would start working. It is compiled by the test with the system C
  compiler.
* **Objects the core would hand to a plugin** (in ``tensorrt_conformance_probe.py``): the
  plugin registry, the symbolic shape-expression builder and its expressions, the
  launch-parameter and extra-argument sinks, and the GPU (compute capability + driver
  version) that ``aot_impl`` compiles for.

What this cannot prove: anything the C++ builder or a GPU does (parsing, tactic timing,
running the PTX). ``scripts/gpu-check.sh`` covers that on a GPU machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BindingsRelease:
    """One official TensorRT bindings wheel."""

    distribution: str  # tensorrt_cu12_bindings / tensorrt_cu13_bindings
    version: str

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])


# The supported range, as the conformance suite verifies it: the oldest supported 10.x,
# the newest 10.x, an 11.x between, and the newest 11.x.
RELEASES = (
    BindingsRelease("tensorrt_cu12_bindings", "10.10.0.31"),
    BindingsRelease("tensorrt_cu12_bindings", "10.16.1.11"),
    BindingsRelease("tensorrt_cu12_bindings", "11.1.0.106"),
    BindingsRelease("tensorrt_cu13_bindings", "11.4.0.106"),
)

CORE_STANDIN_C = r"""
#include <stdio.h>
static void *needs_core(const char *what) {
    fprintf(stderr, "TensorRT core stand-in: %s needs the real TensorRT C++ library\n", what);
    return 0;
}
void *createInferBuilder_INTERNAL(void *logger, int version) { return needs_core("createInferBuilder"); }
void *createInferRuntime_INTERNAL(void *logger, int version) { return needs_core("createInferRuntime"); }
void *createInferRefitter_INTERNAL(void *engine, void *logger, int version) { return needs_core("createInferRefitter"); }
void *getPluginRegistry(void) { return needs_core("getPluginRegistry"); }
void *getBuilderPluginRegistry(int kind) { return needs_core("getBuilderPluginRegistry"); }
int initLibNvInferPlugins(void *logger, const char *ns) { needs_core("initLibNvInferPlugins"); return 0; }
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version) { return needs_core("createNvOnnxParser"); }
void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version) { return needs_core("createNvOnnxParserRefitter"); }
int getNvOnnxParserVersion(void) { return 0; }
"""

CORE_LIBRARIES = ("libnvinfer", "libnvinfer_plugin", "libnvonnxparser")


def cache_root() -> Path:
    """Where wheels and the compiled stand-in live between runs (the user cache dir)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "alexnet-deploy" / "tensorrt-conformance"


def bindings_dir(release: BindingsRelease) -> Path:
    """The unpacked wheel, importable as ``tensorrt``; downloaded once per release.

    The bindings wheel installs its package as ``tensorrt_bindings``; the ``tensorrt``
    meta-package, which normally provides the import name, also pulls the C++ core.
    A ``tensorrt`` symlink to the unpacked package gives the same import name.
    """
    target = cache_root() / f"{release.distribution}-{release.version}-py{sys.version_info[0]}{sys.version_info[1]}"
    if (target / "tensorrt" / "plugin" / "_lib.py").is_file():
        return target
    with tempfile.TemporaryDirectory() as download:
        command = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
            "--dest", download, f"{release.distribution}=={release.version}",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        wheels = list(Path(download).glob("*.whl"))
        if result.returncode != 0 or len(wheels) != 1:
            raise RuntimeError(
                f"could not download {release.distribution}=={release.version}: {result.stderr.strip()[-500:]}"
            )
        cache_root().mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=cache_root()))  # same file system: the rename below is atomic
        with zipfile.ZipFile(wheels[0]) as wheel:
            wheel.extractall(staging)
        (staging / "tensorrt").symlink_to("tensorrt_bindings", target_is_directory=True)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target


def core_standin_dir(release: BindingsRelease) -> Path:
    """A folder of libnvinfer.so.N, libnvinfer_plugin.so.N, libnvonnxparser.so.N stand-ins."""
    target = cache_root() / f"core-standin-{release.major}"
    if all((target / f"{name}.so.{release.major}").is_file() for name in CORE_LIBRARIES):
        return target
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc) to build the TensorRT core stand-in")
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        source = Path(work) / "core_standin.c"
        source.write_text(CORE_STANDIN_C)
        for name in CORE_LIBRARIES:
            library = Path(work) / f"{name}.so.{release.major}"
            subprocess.run(
                [compiler, "-shared", "-fPIC", f"-Wl,-soname,{library.name}", "-o", str(library), str(source)],
                check=True,
                timeout=120,
            )
            shutil.move(str(library), target / library.name)
    return target


def environment(release: BindingsRelease, repo: Path) -> dict[str, str]:
    """Environment for a subprocess that imports this release's real ``tensorrt``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(bindings_dir(release)), str(repo), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env["LD_LIBRARY_PATH"] = os.pathsep.join([str(core_standin_dir(release)), env.get("LD_LIBRARY_PATH", "")]).rstrip(
        os.pathsep
    )
    env["TRITON_INTERPRET"] = "0"  # the probe compiles PTX; it never runs the kernel
    return env
