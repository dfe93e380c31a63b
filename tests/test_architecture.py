"""The package keeps the shape docs/architecture.md describes: every import runs down
the layers listed there (none upward, so none in a circle), every module says its job
in a docstring and stays under the size limit. Read from the source with ``ast``;
imports under ``if TYPE_CHECKING:`` are annotations only and do not count."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "alexnet_deploy"
MAX_LINES = 400


def documented_layers() -> dict[str, int]:
    """``| 3 | `checkpoint`, `graph` | ...`` rows of docs/architecture.md -> {unit: layer}."""
    layers = {}
    for line in (ROOT / "docs" / "architecture.md").read_text().splitlines():
        match = re.match(r"\|\s*(\d+)\s*\|([^|]+)\|", line)
        if match:
            for unit in re.findall(r"`([\w.]+)`", match.group(2)):
                layers[unit] = int(match.group(1))
    return layers


def unit_of(module: str) -> str:
    """alexnet_deploy.bench.run -> bench; the package root itself is the version only."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] != "__version__" else "__init__"


def project_imports(path: Path) -> set[str]:
    """The project modules ``path`` imports at run time (lazy imports included)."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = module.removesuffix(".__init__") if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    annotation_only = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        for child in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in annotation_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found |= {target} if node.module else {f"{target}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.startswith("alexnet_deploy")}


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_unit_of_the_package_has_a_documented_layer():
    units = {unit_of(".".join(p.relative_to(ROOT).with_suffix("").parts)) for p in MODULES} - {"__init__"}
    assert units - set(documented_layers()) == set(), "add them to docs/architecture.md's layer table"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_down_the_layers(path):
    layers = documented_layers()
    source = unit_of(".".join(path.relative_to(ROOT).with_suffix("").parts))
    if source == "__init__":
        # the package root holds the version only: ``import alexnet_deploy`` (every
        # module's first step) loads nothing else, and no layer reaches upward through it
        assert project_imports(path) == set(), f"{path.name} imports {sorted(project_imports(path))}"
        return
    upward = [
        f"{source} (layer {layers[source]}) imports {target} (layer {layers[unit_of(target)]})"
        for target in project_imports(path)
        if unit_of(target) not in (source, "__init__") and layers[unit_of(target)] >= layers[source]
    ]
    assert upward == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_module_says_its_job_and_stays_small(path):
    tree = ast.parse(path.read_text())
    assert ast.get_docstring(tree), f"{path.name} has no module docstring"
    assert len(path.read_text().splitlines()) <= MAX_LINES
