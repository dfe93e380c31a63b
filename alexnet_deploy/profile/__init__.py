"""``alexnet-deploy profile``: where the time goes, layer by layer, on every backend.

Each backend's own profiler (``Runner.profile``: onnxruntime's session profiling,
OpenVINO's PERF_COUNT, torch.profiler, TensorRT's IProfiler) times the ops of a run of
its own; ``layer_names`` maps them onto AlexNet's layers; each layer is then put
against the machine's limits measured in the same run (``limits``: the FP32 and INT8
fastest dense kernels and the copy bandwidth) with a roofline verdict (``layers``). The sum of
the layer times is compared with the same runner's end-to-end time (``run``), and the
result is a :class:`report.ProfileReport`. Nothing here prints or draws: ``console``
renders the table and ``plots`` the figure.
"""
