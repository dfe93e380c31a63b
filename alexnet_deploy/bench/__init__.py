"""The last step of the pipeline (``alexnet-deploy bench``): every inference backend, at
every precision, timed and judged against the onnxruntime FP32 reference.

Conventions, and where they come from:

* trtexec: warm-up iterations, then timed iterations (a count or a duration); throughput
  is images over the wall time of the timed loop; latency is reported as p50/p90/p99 and
  mean of the per-iteration times; GPU runners also report compute time (CUDA events)
  apart from the host<->device copies.
* Ultralytics' benchmark: one table across formats (here backends x precisions) with
  accuracy next to speed, so a fast row that lost accuracy cannot hide.
* Inputs are the checkpoint's held-out val images (never zeros), cut into batches that
  are rotated across iterations, so no backend is timed on one cache-hot buffer.
* Parity: every row's logits on those same images against onnxruntime FP32 on CPU (the
  reference): max |Δ logits|, top-1 agreement, and top-1/top-5 against the labels.
* Honesty about the harness itself: beside the onnxruntime FP32 row, the same session
  runs the same inputs through bare ``session.run`` calls, interleaved call by call
  with the bench loop so machine load hits both alike; the two throughputs must agree
  within 2% (:class:`timing.HarnessCheck`).

INT8 on onnxruntime is two rows: ``int8`` times the onnxruntime-targeted graph
(``alexnet.int8-ort.onnx``, integer kernels); ``int8-sim`` runs the TensorRT-targeted
graph (``alexnet.int8.onnx``), whose Q/DQ onnxruntime can only simulate in float — its
parity is the INT8 engine's graph's, its speed is no INT8 figure. OpenVINO runs both
graphs as integers: ``int8`` the onnxruntime layout, ``int8-qdq`` the TensorRT one; each
OpenVINO row's notes list the precisions of its runtime graph's layers.

A backend or precision that cannot run here (no TensorRT, no GPU, an FP16 ONNX not built
yet, torch at INT8, bf16 without a bf16-capable CPU) is a row that says "skipped" and
why; its numbers stay empty.

The modules, in the order a run uses them: ``config`` (what to measure), ``planning``
(which rows can run, and how to open each runner), ``inputs`` (the rotated batches and
the memory check), ``timing`` (the timed loop and its statistics), ``run`` (the loop over
rows) and ``report`` (the result). Nothing here prints or draws: ``console`` renders the
report as a table and ``plots`` as a figure.
"""
