"""Labelled images, the deterministic train/val/calibration split and the one preprocessing
definition every step uses: ``sources`` (the embedded digits or an ImageFolder), ``split``,
``preprocessing``, ``augmentation`` (the paper's training augmentation) and ``loading``
(the torch datasets and loaders training batches come from)."""
