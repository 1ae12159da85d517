"""The one-way house: every llmpipe module imports only from its own layer's package or below.

Layers, bottom to top (DESIGN.md): the foundation (config, io, stats, layout, code_version and
the compiled cores) -> tokenizer -> model -> tasks -> data | train -> posttrain | eval ->
report -> cli. Packages that share a layer (data and train; posttrain and eval) do not import
each other. The walk reads every import statement with ``ast``, those inside functions too.
"""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

import llmpipe

PACKAGE = Path(llmpipe.__file__).resolve().parent

# top-level part of a module name (llmpipe.<part>...) -> its layer
LAYERS: dict[str, int] = {
    **dict.fromkeys(["__init__", "config", "io", "stats", "layout", "code_version", "_bpe", "_minhash"], 0),
    "tokenizer": 1,
    "model": 2,
    "tasks": 3,
    "data": 4,
    "train": 4,
    "posttrain": 5,
    "eval": 5,
    "report": 6,
    "cli": 7,
}


def part_of(module: str) -> str:
    """``llmpipe.model.gpt`` -> ``model``; ``llmpipe`` itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path, package: Path) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, package: Path) -> list[tuple[int, str]]:
    """(line, module) of every llmpipe import in a file; ``from llmpipe.x import y`` names
    ``llmpipe.x.y`` where y is a submodule (a file or package), else ``llmpipe.x``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "llmpipe"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "llmpipe":
                continue
            for alias in node.names:
                sub = package.parent.joinpath(*node.module.split("."), alias.name)
                is_module = sub.with_suffix(".py").exists() or (sub / "__init__.py").exists() or any(
                    sub.parent.glob(f"{alias.name}.*.so"))
                found.append((node.lineno, f"{node.module}.{alias.name}" if is_module else node.module))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}:{node.lineno}: relative import; llmpipe imports absolutely")
    return found


def upward_imports(package: Path = PACKAGE) -> list[str]:
    problems = []
    for path in sorted(package.rglob("*.py")):
        own = part_of(module_name(path, package))
        if own not in LAYERS:
            problems.append(f"{path.relative_to(package)}: package {own!r} has no layer in tests/test_layers.py")
            continue
        for line, target in imported_modules(path, package):
            other = part_of(target)
            if other not in LAYERS:
                problems.append(f"{path.relative_to(package)}:{line}: imports {target}, which has no layer")
            elif other != own and LAYERS[other] >= LAYERS[own] and LAYERS[own] > 0:
                problems.append(f"{path.relative_to(package)}:{line}: {own} (layer {LAYERS[own]}) imports "
                                f"{target} ({other}, layer {LAYERS[other]})")
            elif LAYERS[own] == 0 and other != own and LAYERS[other] > 0:
                problems.append(f"{path.relative_to(package)}:{line}: foundation module imports {target}")
    return list(dict.fromkeys(problems))


def test_no_module_imports_a_higher_layer_or_a_sibling_package():
    assert upward_imports() == []


def test_every_package_has_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert packages | modules <= set(LAYERS), sorted((packages | modules) - set(LAYERS))


@pytest.mark.parametrize("source, expected", [
    ("from llmpipe.eval.evaluate import mean_loss\n", "train (layer 4) imports llmpipe.eval.evaluate (eval, layer 5)"),
    ("def f():\n    from llmpipe.posttrain import sft\n", "train (layer 4) imports llmpipe.posttrain.sft"),
    ("import llmpipe.data.stage\n", "train (layer 4) imports llmpipe.data.stage (data, layer 4)"),
])
def test_the_walk_catches_upward_lazy_and_sibling_imports(tmp_path, source, expected):
    """The check can fail: a planted upward (or lazy, or sibling) import in a copy is reported."""
    copy = tmp_path / "llmpipe"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    (copy / "train" / "planted.py").write_text(source)
    problems = upward_imports(copy)
    assert len(problems) == 1 and expected in problems[0], problems
