"""torchvision's pure-Python model and transforms code, importable beside the CPU torch.

What is real: PyPI's ``torchvision==0.28.0`` (the release that matches torch 2.13.0),
installed with ``pip install --no-deps`` so it cannot pull a CUDA torch: its
``torchvision.models.alexnet``, ``torchvision.transforms`` and every line of Python they
run. The weights are whatever the test seeds; nothing is downloaded.

What stands in, and only that: the fake (meta) kernels of torchvision's C++ operators
(``nms``, ``roi_align``...). PyPI's Linux wheel is a CUDA build whose ``_C.so`` cannot
load beside the CPU torch, so those operators are never defined, and
``torchvision/_meta_registrations.py`` dies at import registering fake kernels for them
("operator torchvision::nms does not exist"). While torchvision imports,
``torch.library.register_fake`` is a no-op that returns the function it was given; it is
restored right after. AlexNet and the transforms use none of those operators, so a test
that calls one would fail loudly rather than pass.
"""

from __future__ import annotations

from contextlib import contextmanager
from types import ModuleType

import torch


@contextmanager
def _fake_kernels_not_registered():
    original = torch.library.register_fake

    def register_nothing(op, func=None, /, *args, **kwargs):
        return func if func is not None else (lambda function: function)

    torch.library.register_fake = register_nothing
    try:
        yield
    finally:
        torch.library.register_fake = original


def torchvision() -> ModuleType:
    """The real ``torchvision`` package with its models and transforms. Not a skip where
    it is missing: the dev install puts it here, and these tests must run in CI."""
    with _fake_kernels_not_registered():
        import torchvision
        import torchvision.models
        import torchvision.transforms
    return torchvision
