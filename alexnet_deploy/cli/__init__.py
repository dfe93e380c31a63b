"""The ``alexnet-deploy`` command line. Commands are thin: parse, call one library
function, render; errors the user can fix come back as one line on stderr.

``app`` (the Typer application and its usage-error handling), ``options`` (the options
commands share), and the commands by kind: ``training`` (train), ``pipeline`` (export, build, bench),
``inspection`` (info, doctor), ``serving`` (predict, repository, serve, loadtest) and
``pretrained`` (import, eval), ``precision`` (sensitivity), ``profiling`` (profile).
Library modules are imported inside each command, so ``--help`` stays fast."""

from .app import app
from .inspection import doctor, info
from .pipeline import bench, build, export
from .precision import sensitivity
from .pretrained import eval_model, import_model
from .profiling import profile
from .serving import loadtest, predict, repository, serve
from .training import train

for _command in (train, export, build, bench, info, doctor, predict, repository, serve, loadtest, profile):
    app.command()(_command)
# `import` and `eval` are Python keywords/builtins, so their functions are named otherwise
app.command("import")(import_model)
app.command("eval")(eval_model)
app.command()(sensitivity)

__all__ = ["app"]
