"""dvc.yaml's deps cover the code each stage runs: the import closure of its script inside src/mycolens.

A file a stage imports but does not list would change without rerunning the stage, and `dvc repro` would keep
outputs that the code no longer makes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

SRC = ROOT / "src"


def module_file(name: str) -> Path | None:
    """The file of a mycolens module or package, if it exists."""
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every mycolens module a file imports, at any depth of the file (function-level imports too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("mycolens")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mycolens"):
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}  # `from pkg import module`
    return out


def closure(script: Path) -> set[Path]:
    """Files of src/mycolens reachable by imports from `script` (parent packages' __init__ included)."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for name in imported_modules(todo.pop()):
            parts = name.split(".")
            for k in range(1, len(parts) + 1):
                f = module_file(".".join(parts[:k]))
                if f is not None and f not in seen:
                    seen.add(f)
                    todo.append(f)
    return seen


def docstring_only(path: Path) -> bool:
    """A package face holding only its docstring: it changes nothing a stage computes."""
    return path.name == "__init__.py" and not ast.parse(path.read_text()).body[1:]


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


STAGES = {
    name: stage
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items()
    if stage["cmd"].startswith("python scripts/")
}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_cover_the_code_it_imports(name: str) -> None:
    stage = STAGES[name]
    script = ROOT / stage["cmd"].split()[1]
    deps = [d if isinstance(d, str) else next(iter(d)) for d in stage["deps"]]
    assert script.relative_to(ROOT).as_posix() in deps
    missing = sorted(
        f.relative_to(ROOT).as_posix() for f in closure(script) if not covered(f, deps) and not docstring_only(f)
    )
    assert not missing, f"dvc.yaml stage {name!r} misses deps it imports: {missing}"
