"""The training module: SGD with momentum as in the paper (Section 5), on the embedded digits
or an ImageFolder, writing the checkpoint every later step reads; data-parallel under torchrun.

``config`` (what to train, checked before any data is read), ``loop`` (``train()``), ``epoch``
(one epoch's steps and the evaluation), ``resume`` (the per-epoch files and the resume state),
``results`` (the per-epoch metrics), ``distributed`` (torchrun/DDP) and ``precision`` (autocast)."""
