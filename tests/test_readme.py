"""The README's promises stay true: CI runs the README's own test command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    return [line.strip() for line in lines if line.startswith("    python3 -m venv")]


def test_readme_opens_with_exactly_two_setup_commands():
    commands = readme_commands()
    assert len(commands) == 2
    # the first sets up and runs the main job end to end, its steps in the pipeline's order
    steps = [step.strip() for step in commands[0].split("&&")]
    pipeline = [step for step in steps if step.startswith("alexnet-deploy ")]
    assert [step.split()[1] for step in pipeline] == ["train", "export", "build", "bench"], steps
    assert pipeline[0] == "alexnet-deploy train"  # the main job trains with the defaults the README quotes
    assert any(step.startswith("pip install") for step in steps[: steps.index(pipeline[0])])
    # the second sets up and runs the tests
    assert commands[1].split("&&")[-1].strip() == "pytest"


def test_ci_runs_the_readme_test_command():
    ci_script = (ROOT / ".ci" / "run").read_text()
    assert readme_commands()[1] in ci_script
