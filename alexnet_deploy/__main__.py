"""``python -m alexnet_deploy`` = the ``alexnet-deploy`` command (also what
``torchrun -m alexnet_deploy train ...`` runs in each process)."""

from .cli import app

app(prog_name="alexnet-deploy")
