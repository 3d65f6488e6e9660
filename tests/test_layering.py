"""DESIGN.md's import table ("who may import whom", lower never imports higher), enforced.

Every import of a partgen module in the library's sources, at any depth (imports inside functions
count: a lazy import is still a dependency), is checked against the layer it is made from.
"""

import ast
from pathlib import Path

import pytest

from conftest import REPO_ROOT

# the package folders and the partgen layer each one is imported as (pyproject's package-dir)
ROOTS = {
    REPO_ROOT / "partgen": "partgen",
    REPO_ROOT / "data_pipeline": "partgen.data_pipeline",
    REPO_ROOT / "kernels": "partgen.kernels",
}

# layer -> the other partgen layers it may import (DESIGN.md). native is the C++ build helper the
# fast paths of kernels, nn and data_pipeline share; structures sit under everything that handles tensors.
ALLOWED = {
    "structures": set(),
    "native": set(),
    "kernels": {"structures", "native"},
    "nn": {"structures", "kernels", "native"},
    "models": {"structures", "nn"},
    "diffusion": set(),
    "eval": {"structures"},
    "data_pipeline": {"structures", "native"},
    "train": {"structures", "models", "diffusion", "data_pipeline", "eval"},
    "pipelines": {"structures", "models", "diffusion", "data_pipeline", "eval"},
    "cli": {"pipelines", "train", "data_pipeline"},
    # the web app: a view over the pipelines and over partgen-annotate's per-asset function (Inspect)
    # and geometric cuts (Segment), which live in data_pipeline; no models, no sampling of its own
    "app": {"pipelines", "data_pipeline"},
    "__init__": set(),
}


def sources() -> list[tuple[Path, str]]:
    """(file, the dotted module it is imported as) for every library source file."""
    found = []
    for root, package in ROOTS.items():
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            if package == "partgen" and rel.parts[0] in ("data_pipeline", "kernels", "assets"):
                continue
            parts = [p for p in rel.parts if p != "__init__"] if rel.name == "__init__" else list(rel.parts)
            found.append((path, ".".join([package, *parts]) if parts else package))
    return found


def layer(module: str) -> str | None:
    """partgen.models.io -> models; partgen itself -> __init__; outside partgen -> None."""
    parts = module.split(".")
    if parts[0] != "partgen":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def imported(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, relative ones resolved; `from partgen import x`
    names partgen.x."""
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base == "partgen":
                out += [(node.lineno, f"partgen.{alias.name}") for alias in node.names]
            else:
                out.append((node.lineno, base))
    return out


SOURCES = sources()


def test_every_layer_of_the_library_is_in_the_table():
    layers = {layer(module) for _, module in SOURCES}
    assert layers <= set(ALLOWED), f"layers missing from the import table: {layers - set(ALLOWED)}"
    assert {"models", "diffusion", "pipelines", "train", "kernels", "data_pipeline"} <= layers


@pytest.mark.parametrize("path, module", SOURCES, ids=[m for _, m in SOURCES])
def test_imports_follow_the_table(path, module):
    own = layer(module)
    wrong = [
        f"{path.relative_to(REPO_ROOT)}:{line} imports {name} ({own} may import {sorted(ALLOWED[own]) or 'no other layer'})"
        for line, name in imported(path, module)
        if (target := layer(name)) is not None and target != own and target not in ALLOWED[own]
    ]
    assert not wrong, "\n".join(wrong)


def test_the_checker_catches_a_model_that_imports_a_sampler(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from partgen.diffusion.flow import sample\n    from ..pipelines import generate\n")
    names = [name for _, name in imported(bad, "partgen.models.bad")]
    assert names == ["partgen.diffusion.flow", "partgen.pipelines"]
    assert not {layer(n) for n in names} <= ALLOWED["models"]
