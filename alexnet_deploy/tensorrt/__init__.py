"""The TensorRT backend: everything that touches TensorRT except the LRN plugin.

* ``availability`` -- can TensorRT run here: its version, the CUDA device (asked of the
  driver), and the one-line reasons when building or running engines is impossible.
* ``config`` -- ``EngineBuildConfig``, the build's settings and their defaults.
* ``engine`` -- ``build_engine``: ONNX -> plan through polygraphy, and its error line.
* ``inspector`` -- per-layer precision from TensorRT's engine inspector.
* ``sidecar`` -- the JSON record beside each plan, and whether a plan fits this machine.
* ``runner`` -- ``TensorRTRunner``, the common runner interface over a plan.

The LRN plugin (``alexnet_deploy.plugin``) holds the kernel and its registration with
TensorRT; it uses ``availability`` (stdlib only) for the GPU facts. Nothing here imports
the pipeline stages (build, bench, serve) or the CLI.
"""
