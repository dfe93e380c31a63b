"""docs/cli.md is Typer's own rendering of the CLI (``typer alexnet_deploy.cli utils docs``),
so the option reference cannot drift from ``--help``: regenerate it when a command or
option changes (the command is in the assertion message)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "typer alexnet_deploy.cli utils docs --name alexnet-deploy --output docs/cli.md"


def render_cli_docs(output: Path) -> str:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "typer",
            "alexnet_deploy.cli",
            "utils",
            "docs",
            "--name",
            "alexnet-deploy",
            "--output",
            str(output),
        ],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    return output.read_text()


def test_docs_cli_md_is_the_cli_as_it_is(tmp_path):
    assert (ROOT / "docs" / "cli.md").read_text() == render_cli_docs(tmp_path / "cli.md"), f"run `{REGENERATE}`"


def test_the_rendering_holds_every_command_and_an_option_help_text(tmp_path):
    """The comparison above compares something: every command, and --help's own words."""
    import typer
    from typer.testing import CliRunner

    from alexnet_deploy.cli import app

    rendered = render_cli_docs(tmp_path / "cli.md")
    commands = list(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert len(commands) >= 12 and all(f"## `alexnet-deploy {name}`" in rendered for name in commands)
    help_text = CliRunner().invoke(app, ["export", "--help"], terminal_width=400).output
    assert "--opset" in help_text and "`--opset <int>`" in rendered
