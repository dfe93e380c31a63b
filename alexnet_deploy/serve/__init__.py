"""Serving: in-process ``predict``, a Triton Inference Server model repository, a local
Triton server (``serve``) and a load test against it. One technology folder: nothing
outside ``serve/`` imports from here except the CLI."""
