"""The one ``openvino.Core`` of the process: every OpenVINO read and compile here uses it.

Why only one. OpenVINO's CPU plugin (seen in 2026.4.1) gives the thread that creates it
a signal stack of its own (``sigaltstack``, an 11.5 KB mapping). When the plugin is
released, it puts back the stack it found. Each ``openvino.Core()`` that compiles for the
CPU creates its own plugin. So when two Cores are released in the order they were made,
the thread is left registered to the first plugin's stack, which has been unmapped.

After that, the next signal that thread takes with a Python handler kills the process
with SIGSEGV: the kernel cannot write the signal frame. Python installs every handler
with SA_ONSTACK, and torch's DataLoader installs one for SIGCHLD. This is what crashed
the test suite: a profile that compiled on fresh Cores, a training run with loader
workers, then a child process exiting.

With one Core there is one CPU plugin, made once and released at exit.
``tests/test_openvino.py`` checks both the hazard and the cure in a child process.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

_lock = threading.Lock()  # two threads' first calls must not make two Cores


def openvino_core() -> Any:
    """The process's ``openvino.Core`` (an ``openvino.Core``), made on first use."""
    with _lock:
        return _make_core()


@functools.cache
def _make_core() -> Any:
    import openvino

    return openvino.Core()
