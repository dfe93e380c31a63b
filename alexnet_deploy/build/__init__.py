"""``alexnet-deploy build``: its options (``config``, light enough for the CLI to take
defaults from at import time) and the run itself (``run``)."""
