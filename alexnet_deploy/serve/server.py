"""A real Triton Inference Server process on 127.0.0.1, from the nvidia-pytriton wheel.

We use only the ``tritonserver`` binary, its python backend and the python-backend
stubs that the wheel ships (``pip install --no-deps nvidia-pytriton``), not pytriton's
Python API: the wheel's metadata pins numpy < 2, and that API is not needed to run a
model repository. Two things make its python backend work in our environment:

* the stub is linked against ``libpython3.X.so``; without help the loader picks the
  system's copy, whose stdlib does not match the running interpreter (measured on
  Python 3.11.7: ``'_thread.RLock' object has no attribute '_recursion_count'``).
  ``LD_LIBRARY_PATH`` starts with this interpreter's ``sysconfig LIBDIR``;
* the stub must import this interpreter's packages (numpy, onnxruntime, PIL, ours).
  Measured: it ignores ``PYTHONPATH`` and finds its prefix (and so a venv's
  site-packages) through the first ``python3`` on ``PATH``, so ``PATH`` starts with this
  interpreter's folder; ``ALEXNET_DEPLOY_SOURCE`` names the alexnet_deploy that is
  running, which the repository's model.py files put first on ``sys.path`` (the same
  code serves even from a source checkout that is not the installed copy).
The numpy-1-ABI stub is handled in ``triton_models`` (tensors pass by DLPack).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

from ..artifacts import ENGINES_DIR
from ..choices import ServedBackend
from ..errors import DeployError
from .config import ServerConfig

HOST = "127.0.0.1"  # never anything but loopback: this is a local/dev server
SOURCE_VARIABLE = "ALEXNET_DEPLOY_SOURCE"  # read by the repository's model.py files
INSTALL_HINT = "pip install --no-deps nvidia-pytriton==0.7.0 (see docs/serving.md)"


@dataclass
class TritonInstallation:
    binary: Path
    backends: Path  # the wheel's backends/ (python only)
    stub: Path  # triton_python_backend_stub for this interpreter's version
    libs: Path  # the wheel's bundled shared libraries


def find_triton() -> TritonInstallation:
    spec = importlib.util.find_spec("pytriton")  # locate without importing its numpy<2 API
    if spec is None or spec.origin is None:
        raise DeployError(f"no Triton Inference Server found: {INSTALL_HINT}")
    root = Path(spec.origin).parent / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    found = TritonInstallation(
        root / "bin" / "tritonserver",
        root / "backends",
        root / "python_backend_stubs" / version / "triton_python_backend_stub",
        Path(spec.origin).parents[1] / "nvidia_pytriton.libs",
    )
    for path in (found.binary, found.backends / "python", found.stub):
        if not path.exists():
            raise DeployError(
                f"the Triton installation is incomplete ({path} missing; Python {version}): {INSTALL_HINT}"
            )
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def server_environment(install: TritonInstallation) -> dict[str, str]:
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (libdir, str(install.libs), os.environ.get("LD_LIBRARY_PATH")) if p
    )
    env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.executable).parent), os.environ.get("PATH")) if p)
    env[SOURCE_VARIABLE] = str(Path(__file__).resolve().parents[2])
    env["PYTHONNOUSERSITE"] = "1"
    return env


@dataclass
class TritonServer:
    """``with TritonServer(config) as server:`` — started and ready inside, stopped after."""

    config: ServerConfig
    http_port: int = 0
    grpc_port: int = 0
    metrics_port: int = 0
    startup_s: float = 0.0  # launch to ready
    process: subprocess.Popen | None = None
    _workspace: Path | None = None
    _log_handle: IO[bytes] | None = field(default=None, repr=False)

    @property
    def http_url(self) -> str:
        return f"{HOST}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    @property
    def log_path(self) -> Path:
        if self.config.log is not None:
            return self.config.log
        if self._workspace is None:
            raise RuntimeError("the server log has no path before start()")
        return self._workspace / "tritonserver.log"

    @property
    def running(self) -> subprocess.Popen:
        """The server process; asking before start() or after stop() is a bug."""
        if self.process is None:
            raise RuntimeError("tritonserver is not running")
        return self.process

    @staticmethod
    def _backend_directory(workspace: Path, install: TritonInstallation) -> Path:
        """The wheel's python backend beside the stub for this interpreter (the backend
        looks for the stub in its own folder; the wheel keeps one per Python version)."""
        python = workspace / "backends" / "python"
        python.mkdir(parents=True)
        for item in (install.backends / "python").iterdir():
            if item.is_file():
                (python / item.name).symlink_to(item)
        (python / "triton_python_backend_stub").symlink_to(install.stub)
        return python.parent

    def start(self) -> TritonServer:
        if self.config.repository is None:
            raise DeployError("no model repository to serve (write one with `alexnet-deploy repository`)")
        repository = Path(self.config.repository)
        if not (repository / "alexnet" / "config.pbtxt").is_file():
            raise DeployError(f"{repository} is not a model repository (write one with `alexnet-deploy repository`)")
        install = find_triton()
        workspace = self._workspace = Path(tempfile.mkdtemp(prefix="alexnet-triton-"))
        self.http_port = self.config.http_port or free_port()
        self.grpc_port = self.config.grpc_port or free_port()
        self.metrics_port = self.config.metrics_port or free_port()
        command = [
            str(install.binary),
            f"--model-repository={repository.resolve()}",
            f"--backend-directory={self._backend_directory(workspace, install)}",
            f"--http-address={HOST}",
            f"--grpc-address={HOST}",
            f"--metrics-address={HOST}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--allow-cpu-metrics=true",
            f"--exit-timeout-secs={int(self.config.shutdown_timeout_s)}",
            "--strict-readiness=true",
        ]
        self._log_handle = open(self.log_path, "wb")  # noqa: SIM115 -- the server's stdout for its life; stop() closes it
        started = time.perf_counter()
        self.process = subprocess.Popen(
            command,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            env=server_environment(install),
            start_new_session=True,
        )
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - started
        return self

    def _wait_ready(self, started: float) -> None:
        import tritonclient.http as http
        from tritonclient.utils import InferenceServerException

        client = http.InferenceServerClient(self.http_url, connection_timeout=2.0, network_timeout=2.0)
        try:
            while time.perf_counter() - started < self.config.startup_timeout_s:
                if self.running.poll() is not None:
                    raise DeployError(
                        f"tritonserver exited with code {self.running.returncode} while starting: {self.failure_summary()}"
                    )
                with contextlib.suppress(OSError, InferenceServerException):  # not listening yet: refused/reset
                    if client.is_server_ready():
                        return
                time.sleep(0.25)
        finally:
            client.close()
        raise DeployError(
            f"tritonserver not ready after {self.config.startup_timeout_s:.0f} s: {self.failure_summary()}"
        )

    def failure_summary(self) -> str:
        """The server log's error lines, joined on one line (for DeployError)."""
        if self._log_handle is not None:
            self._log_handle.flush()
        lines = self.log_path.read_text(errors="replace").splitlines() if self.log_path.is_file() else []
        errors = [line.strip() for line in lines if line.startswith("E") or "Error" in line]
        return " | ".join(errors[-4:]) or f"see {self.log_path}"

    def stop(self) -> int | None:
        """SIGTERM (Triton drains in-flight requests), then SIGKILL after the timeout."""
        code = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(self.config.shutdown_timeout_s + 5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(10)
            code = self.process.returncode
            self.process = None
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        if self._workspace is not None:
            shutil.rmtree(self._workspace, ignore_errors=True)  # with the log unless --log named one
            self._workspace = None
        return code

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def unsupported_models(repository: Path, install: TritonInstallation) -> list[str]:
    """Models in ``repository`` whose backend this Triton build lacks (the wheel's has
    only ``python``; a stock repository's onnxruntime/tensorrt_plan models need the
    NGC container)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    available = {p.name for p in install.backends.iterdir() if p.is_dir()} | {"ensemble"}
    problems = []
    for path in sorted(Path(repository).glob("*/config.pbtxt")):
        config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        needed = config.backend or {
            "ensemble": "ensemble",
            "tensorrt_plan": "tensorrt",
            "onnxruntime_onnx": "onnxruntime",
        }.get(config.platform, config.platform)
        if needed not in available:
            problems.append(f"{path.parent.name} needs the {needed} backend")
    return problems


def serve_until_signal(
    config: ServerConfig,
    onnx_path: Path,
    announce: Callable[[str], None],
    backend: str = "onnxruntime",
    precision: str = "fp32",
    engines_dir: Path = ENGINES_DIR,
) -> None:
    """Run the server until SIGTERM or SIGINT, then stop it cleanly (in-flight requests
    drain). Without a repository, one is written from the export (and the engines) whose
    ``alexnet`` ensemble classifies with ``backend`` (``onnxruntime``, or ``openvino`` or
    ``tensorrt`` at ``precision``). ``announce`` receives the status lines (the CLI prints them)."""
    from ..runners.registry import BACKENDS, ArtifactMissing, ModelFiles, backend_entry, load_artifact
    from .config import RepositoryConfig, served_model_name
    from .repository import write_repository

    if backend not in ServedBackend.values():
        raise DeployError(f"--backend {backend}: the local server runs {' or '.join(ServedBackend.values())}")
    entry = backend_entry(backend)
    reason = entry.unavailable_reason()
    if reason is not None:
        raise DeployError(f"--backend {backend}: {reason}")
    if precision not in entry.served:  # never an FP32 model answering for another precision
        others = [name for name, other in BACKENDS.items() if precision in other.served]
        hint = f"; serve {precision} with --backend {' or '.join(others)}" if others else ""
        raise DeployError(f"--backend {backend} serves {' or '.join(entry.served)}, not {precision}{hint}")
    if config.repository is None:  # the file it serves must exist now, not be a missing model in the repository
        try:
            load_artifact(entry.artifact(ModelFiles(Path(onnx_path), Path(engines_dir)), precision))
        except ArtifactMissing as missing:
            raise DeployError(f"--backend {backend} --precision {precision}: {missing}") from None
    target = served_model_name(backend, precision)

    with tempfile.TemporaryDirectory(prefix="alexnet-repository-") as scratch:
        repository = config.repository
        if repository is None:
            written = write_repository(
                onnx_path,
                Path(scratch) / "model_repository",
                engines_dir,
                RepositoryConfig(flavour="local"),
                target=target,
            )
            repository = written.path
            config = replace(config, repository=repository)
            announce(
                f"repository {onnx_path} -> {', '.join(written.models)} (python backend; the alexnet ensemble uses {target})"
            )
        problems = unsupported_models(repository, find_triton())
        if problems:
            raise DeployError(
                f"{config.repository}: {'; '.join(problems)}, and this Triton (nvidia-pytriton's) has only the python "
                "backend; serve without --repository, or run a stock repository in the tritonserver container"
            )
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            with TritonServer(config) as server:
                announce(
                    f"Triton ready in {server.startup_s:.1f} s: HTTP {server.http_url}  gRPC {server.grpc_url}  "
                    f"metrics http://{HOST}:{server.metrics_port}/metrics  (Ctrl-C or SIGTERM stops it)"
                )
                while not stop.wait(0.5):
                    if server.running.poll() is not None:
                        raise DeployError(
                            f"tritonserver exited with code {server.running.returncode}: {server.failure_summary()}"
                        )
                announce("stopping: draining in-flight requests")
            announce("stopped")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
