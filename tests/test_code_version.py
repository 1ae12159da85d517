"""Code versions are derived from the import graph: editing a file of the package reruns exactly the
stages that can run it, checked on a private copy of the package against independent oracles."""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llmpipe.cli import STAGES
from llmpipe.code_version import PACKAGE_DIR, CodeVersionError, code_files, code_version, code_versions

MODULES = {stage: module for stage, (module, _) in STAGES.items()}
MODEL_HALF = {"tokenizer", "tokenize", "pack", "pretrain", "evaluate", "posttrain-data", "sft", "dpo", "rl",
              "generate", "chat", "export"}

# Run in a subprocess with the copy first on sys.path: import every stage's module and record each
# import statement executed (importer -> imported), so each stage's dynamic closure is a reachability
# in one recorded graph, with one interpreter paying for torch once. Lazy imports inside functions
# that never run at import time are not seen: this oracle is a lower bound of the static closure.
DYNAMIC_IMPORTS = r"""
import builtins, importlib, importlib.util, json, sys
root, modules = sys.argv[1], json.loads(sys.argv[2])
sys.path.insert(0, root)
sys.dont_write_bytecode = True
edges = {}
real_import = builtins.__import__

def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    module = real_import(name, globals, locals, fromlist, level)
    globals = globals or {}
    target = importlib.util.resolve_name("." * level + name, globals.get("__package__")) if level else name
    names = [target] + [f"{target}.{item}" for item in fromlist or () if f"{target}.{item}" in sys.modules]
    edges.setdefault(globals.get("__name__", "__main__"), set()).update(names)
    return module

builtins.__import__ = recording_import
for module in modules:
    importlib.import_module(module)
builtins.__import__ = real_import

def closure(module):
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen or not name.startswith("llmpipe"):
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))] + sorted(edges.get(name, ()))
    return {name: getattr(sys.modules[name], "__file__", None) for name in seen if name in sys.modules}

print(json.dumps({module: closure(module) for module in modules}))
"""


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    """A private copy of the installed package: sources, data files and the built extensions."""
    root = tmp_path_factory.mktemp("copy")
    shutil.copytree(PACKAGE_DIR, root / "llmpipe", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
    return root / "llmpipe"


@pytest.fixture(scope="module")
def closures(package) -> dict[str, set[str]]:
    """stage -> the files its code version hashes (relative to the package)."""
    return {stage: set(code_files(module, package)) for stage, module in MODULES.items()}


@pytest.fixture(scope="module")
def dynamic(package) -> dict[str, set[str]]:
    """stage -> the files of the package modules that importing its module runs."""
    modules = sorted(set(MODULES.values()))
    proc = subprocess.run([sys.executable, "-c", DYNAMIC_IMPORTS, str(package.parent), json.dumps(modules)],
                          capture_output=True, text=True, timeout=120, cwd=package.parent)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.splitlines()[-1])
    files = {}
    for stage, module in MODULES.items():
        paths = {Path(f) for f in loaded[module].values() if f}
        assert all(p.is_relative_to(package) for p in paths), f"{stage} imported llmpipe from outside the copy"
        files[stage] = {p.relative_to(package).as_posix() for p in paths}
    return files


def edited(path: Path) -> bytes:
    original = path.read_bytes()
    path.write_bytes(original + (b"\n# edited\n" if path.suffix == ".py" else b"\n"))
    return original


def changed_stages(package: Path, relative: str, before: dict[str, str]) -> set[str]:
    """The stages whose code version changes when ``relative`` is edited (the edit is undone after)."""
    path = package / relative
    original = edited(path)
    try:
        after = code_versions(MODULES.values(), package)
    finally:
        path.write_bytes(original)
    return {stage for stage, module in MODULES.items() if after[module] != before[module]}


def test_static_closure_holds_every_module_an_import_runs(closures, dynamic):
    for stage in MODULES:
        assert dynamic[stage], stage
        assert dynamic[stage] <= closures[stage], (stage, sorted(dynamic[stage] - closures[stage]))


IMPORT_LINE = re.compile(
    r"^[ \t]*(?:from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#]+)|import[ \t]+([^\n#]+))", re.MULTILINE
)


def test_static_closure_holds_every_module_its_files_name_on_an_import_line(package, closures):
    """A second, cruder reading of the source (regular expressions, any indentation: lazy imports too)."""

    def module_file(name: str) -> str | None:
        parts = name.split(".")[1:]
        for candidate in ("/".join([*parts, "__init__.py"]), "/".join(parts) + ".py"):
            if (package / candidate).is_file():
                return candidate
        built = [p for p in package.glob("/".join(parts) + ".*") if p.suffix in (".so", ".pyd")] if parts else []
        return built[0].relative_to(package).as_posix() if built else None

    def names(text: str) -> list[str]:
        return [n.split(" as ")[0].strip() for n in text.strip("()").replace("\n", " ").split(",") if n.strip()]

    for stage, files in closures.items():
        for relative in (f for f in files if f.endswith(".py")):
            package_parts = ["llmpipe", *relative.split("/")[:-1]]  # the package a relative import starts from
            for source, imported, plain in IMPORT_LINE.findall((package / relative).read_text()):
                if plain:
                    targets = names(plain)
                else:
                    dots = len(source) - len(source.lstrip("."))
                    base = source
                    if dots:
                        anchor = package_parts[: len(package_parts) - dots + 1]
                        base = ".".join(anchor + [source.lstrip(".")]).strip(".")
                    targets = [base] + [f"{base}.{n}" for n in names(imported) if module_file(f"{base}.{n}")]
                for target in targets:
                    if target.split(".")[0] == "llmpipe" and (file := module_file(target)):
                        assert file in files, f"{stage}: {relative} imports {target} ({file}), not in its closure"


def test_editing_any_file_changes_exactly_the_stages_that_hold_it(package, closures, dynamic):
    before = code_versions(MODULES.values(), package)
    assert before == code_versions(MODULES.values(), package), "a code version must be deterministic"
    files = sorted(p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file())
    assert len(files) > 30
    for relative in files:
        changed = changed_stages(package, relative, before)
        assert changed == {stage for stage, held in closures.items() if relative in held}, relative
        assert {stage for stage, ran in dynamic.items() if relative in ran} <= changed, relative


def test_the_bug_editing_shared_data_code_reruns_its_stages(package):
    before = code_versions(MODULES.values(), package)
    assert {"url-filter", "extract", "quality"} <= changed_stages(package, "data/stage.py", before)
    assert "ingest" in changed_stages(package, "data/documents.py", before)
    blocklists = sorted((package / "data" / "blocklists").glob("*.txt"))
    assert blocklists
    for path in blocklists:
        changed = changed_stages(package, path.relative_to(package).as_posix(), before)
        assert "url-filter" in changed, path.name
        assert not changed & MODEL_HALF, (path.name, changed & MODEL_HALF)
    templates = sorted(p.relative_to(package).as_posix() for p in (package / "report").glob("*.j2"))
    assert templates and all(changed_stages(package, t, before) == {"report"} for t in templates)
    extension = Path(importlib.util.find_spec("llmpipe._bpe").origin).name  # the file Python imports
    assert {"tokenizer", "tokenize"} <= changed_stages(package, extension, before)


def test_an_edit_that_keeps_the_size_counts(package):
    before = code_versions(MODULES.values(), package)
    path = package / "data" / "stage.py"
    original = path.read_bytes()
    try:
        path.write_bytes(original.replace(b"def ", b"def  ", 1).replace(b"\n\n", b"\n", 1))
        assert len(path.read_bytes()) == len(original) and path.read_bytes() != original
        after = code_versions(MODULES.values(), package)
    finally:
        path.write_bytes(original)
    assert after[MODULES["quality"]] != before[MODULES["quality"]]


def test_installed_package_is_what_the_rules_hash():
    module = MODULES["tokenizer"]
    assert code_version(module) == code_versions([module])[module]
    origin = Path(importlib.util.find_spec("llmpipe._bpe").origin)
    assert origin.relative_to(PACKAGE_DIR).as_posix() in code_files(module)


def test_missing_stage_module_is_named(package):
    with pytest.raises(CodeVersionError, match="llmpipe.data.no_such_stage"):
        code_versions(["llmpipe.data.no_such_stage"], package)


def write_package(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(textwrap.dedent(text))
    return root / "pkg"


def test_resolution_rules_on_a_small_package(tmp_path):
    package = write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/cli.py": "",
        "pkg/util.py": "VALUE = 1\n",
        "pkg/sub/__init__.py": "from pkg.sub.helper import helper\n",
        "pkg/sub/helper.py": "def helper(): pass\n",
        "pkg/sub/other.py": "",
        "pkg/sub/lazy.py": "",
        "pkg/stage.py": """
            from pathlib import Path

            from pkg.util import VALUE  # a name of pkg.util: pkg.util, not pkg.util.VALUE
            from pkg.sub import other  # a submodule: pkg.sub.other (and pkg.sub's __init__)
            from . import util

            HERE = Path(__file__).resolve().parent
            TABLES = HERE / "tables"

            try:
                import pkg.optional  # missing, and allowed to be
            except ImportError:
                pass

            def run(name):
                import pkg.sub.lazy  # a lazy import counts
                return (TABLES / f"{name}.txt").read_text()
        """,
        "pkg/tables/a.txt": "a\n",
        "pkg/tables/nested/b.txt": "b\n",
        "pkg/tables/.a.txt.swp": "editor state\n",
        "pkg/broken.py": "import pkg.missing\n",
    })
    assert set(code_files("pkg.stage", package)) == {
        "__init__.py", "stage.py", "util.py", "sub/__init__.py", "sub/helper.py", "sub/other.py", "sub/lazy.py",
        "tables/a.txt", "tables/nested/b.txt",
    }
    with pytest.raises(CodeVersionError, match="pkg.missing"):
        code_versions(["pkg.broken"], package)


def test_package_directories_named_by_loaders_count(tmp_path):
    package = write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/report/__init__.py": "",
        "pkg/report/page.html.j2": "<html>\n",
        "pkg/report/html.py": """
            import jinja2

            def render():
                return jinja2.PackageLoader("pkg.report", ".")
        """,
        "pkg/config.py": """
            import os

            SCHEMA = os.path.join(os.path.dirname(__file__), "schemas", "config.yaml")
        """,
        "pkg/schemas/config.yaml": "{}\n",
        "pkg/schemas/section.yaml": "{}\n",  # read through the file's folder: counts too
        "pkg/outside.py": "from pathlib import Path\n\nREPO = Path(__file__).parent.parent / 'workflow'\n",
    })
    assert set(code_files("pkg.report.html", package)) == {
        "__init__.py", "report/__init__.py", "report/html.py", "report/page.html.j2"}
    assert set(code_files("pkg.config", package)) == {
        "__init__.py", "config.py", "schemas/config.yaml", "schemas/section.yaml"}
    assert set(code_files("pkg.outside", package)) == {"__init__.py", "outside.py"}
