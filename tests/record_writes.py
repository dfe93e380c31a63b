"""``alexnet-deploy`` as ``python -m alexnet_deploy`` runs it, noting every file this
process puts in place: each ``os.replace`` (the last step of every atomic write, see
``files.atomic_output``) appends the target's name to ``$RECORD_WRITES_DIR/rank<RANK>.txt``.
test_distributed.py runs it under torchrun to see which rank writes what."""

import os
import sys
from pathlib import Path

_replace = os.replace
_log = Path(os.environ["RECORD_WRITES_DIR"]) / f"rank{os.environ.get('RANK', '0')}.txt"


def _recording_replace(source, target, *args, **kwargs):
    _replace(source, target, *args, **kwargs)
    with open(_log, "a") as log:
        log.write(f"{Path(target).name}\n")


os.replace = _recording_replace

from alexnet_deploy.cli import app  # noqa: E402  (after the patch, which must see every write)

app(sys.argv[1:], prog_name="alexnet-deploy")
