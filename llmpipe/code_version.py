"""The code version of a stage: a hash of every file of the package its module can run, so that
editing any of them (or a data file it reads) reruns the stage's rule, and editing anything else does not.

Computed from the source, never listed: the import graph is walked statically (``ast``) from the
stage's module, through every ``import`` and ``from ... import`` anywhere in a module (lazy imports
inside functions included) and every package ``__init__.py`` on the way, restricted to the package.
Modules are found as Python finds them (``PathFinder`` over the package directory), so a compiled
extension counts as the built file Python imports, which changes whenever its sources are rebuilt.

Data files count by one rule, read off the AST: a module that builds a path from its own
``__file__`` (``Path(__file__).parent / "blocklists"``, ``os.path.join(os.path.dirname(__file__), ...)``)
or names a package's directory (``jinja2.PackageLoader("llmpipe.report", ".")``,
``importlib.resources.files("llmpipe.data") / "blocklists"``) depends on every data file in the
directory that path names (for a path to a file: the directory holding it), subdirectories included.
Data files are the non-code files (not ``.py``, bytecode or extensions; no ``__pycache__``, no hidden
or editor backup files, nothing inside a subpackage); paths outside the package directory do not
count (a wheel has nothing there).

This module is a bottom layer: it imports nothing from llmpipe but the package's ``__init__``.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib.machinery
import os
from collections.abc import Iterable
from pathlib import Path

import llmpipe

PACKAGE_DIR = Path(llmpipe.__file__).parent
DIGEST_CHARS = 16

# Not data: sources, bytecode and extension modules ("_bpe.cpython-311-x86_64-linux-gnu.so" ends in ".so").
CODE_SUFFIXES = frozenset(
    [*importlib.machinery.SOURCE_SUFFIXES, *importlib.machinery.BYTECODE_SUFFIXES, ".pyc", ".pyo", ".pyd", ".so"]
    + [Path(suffix).suffix for suffix in importlib.machinery.EXTENSION_SUFFIXES]
)
# An import inside `try:` with one of these handlers may be missing (an optional dependency).
IMPORT_ERRORS = frozenset({"ImportError", "ModuleNotFoundError", "Exception", "BaseException"})


class CodeVersionError(LookupError):
    """A stage module, or a module it imports outside a ``try: ... except ImportError``, is missing."""


@functools.cache
def code_version(module: str) -> str:
    """Short hex digest of the files ``module`` ("llmpipe.data.quality") can run, in the installed package.

    Cached per process (the Snakefile asks once per rule); ``code_versions`` computes afresh.
    """
    return code_versions([module])[module]


def code_versions(modules: Iterable[str], package_dir: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """module -> code version, for the package in ``package_dir`` (default: the installed llmpipe)."""
    graph = _Graph(Path(package_dir) if package_dir is not None else PACKAGE_DIR)
    return {module: graph.digest(module) for module in modules}


def code_files(module: str, package_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """The files, relative to the package directory, that ``module``'s code version hashes (sorted)."""
    graph = _Graph(Path(package_dir) if package_dir is not None else PACKAGE_DIR)
    return sorted(graph.closure(module))


class _Graph:
    """One walk over one package directory: each module is read, parsed and resolved once."""

    def __init__(self, package_dir: Path) -> None:
        importlib.machinery.PathFinder.invalidate_caches()  # modules added or moved since the last walk
        self.package_dir = Path(os.path.abspath(package_dir))
        self.root = package_dir.name  # the top-level package's name: "llmpipe"
        self.bytes: dict[Path, bytes] = {}
        self.specs: dict[str, importlib.machinery.ModuleSpec | None] = {}
        self.deps: dict[str, tuple[frozenset[str], frozenset[Path]]] = {}

    # -- finding modules, as the import system does -------------------------------------------

    def spec(self, name: str) -> importlib.machinery.ModuleSpec | None:
        """The spec of package module ``name`` (None when there is none), without importing anything."""
        if name not in self.specs:
            parts = name.split(".")
            if parts[0] != self.root or not all(p.isidentifier() for p in parts):
                self.specs[name] = None
            elif len(parts) == 1:
                self.specs[name] = importlib.machinery.PathFinder.find_spec(name, [str(self.package_dir.parent)])
            else:
                parent = self.spec(".".join(parts[:-1]))
                locations = parent.submodule_search_locations if parent is not None else None
                self.specs[name] = (
                    importlib.machinery.PathFinder.find_spec(name, list(locations)) if locations else None
                )
        return self.specs[name]

    def file(self, name: str) -> Path | None:
        spec = self.spec(name)
        return Path(spec.origin) if spec is not None and spec.has_location and spec.origin else None

    def read(self, path: Path) -> bytes:
        if path not in self.bytes:
            self.bytes[path] = path.read_bytes()
        return self.bytes[path]

    def relative(self, path: Path) -> str:
        return path.relative_to(self.package_dir).as_posix()

    # -- the closure ------------------------------------------------------------------------------

    def closure(self, module: str) -> set[str]:
        """Relative paths of ``module``, its parents, everything they import (transitively) and their data."""
        if self.spec(module) is None:
            raise CodeVersionError(
                f"code version: no module {module!r} in {self.package_dir} (a stage's module was moved or"
                " renamed? llmpipe/cli.py's STAGES names each stage's module)"
            )
        files: set[str] = set()
        seen: set[str] = set()
        todo = [module]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            todo.extend(_parents(name))
            path = self.file(name)
            if path is None:  # a namespace package: no file of its own
                continue
            files.add(self.relative(path))
            imports, data = self.dependencies(name, path)
            todo.extend(imports)
            files.update(self.relative(p) for p in data)
        return files

    def digest(self, module: str) -> str:
        digest = hashlib.sha256()
        for relative in sorted(self.closure(module)):
            data = self.read(self.package_dir / relative)
            digest.update(f"{relative}\0{len(data)}\0".encode())
            digest.update(data)
        return digest.hexdigest()[:DIGEST_CHARS]

    def dependencies(self, name: str, path: Path) -> tuple[frozenset[str], frozenset[Path]]:
        """Package modules ``name`` imports, and the data files it reads."""
        if name not in self.deps:
            if path.suffix not in importlib.machinery.SOURCE_SUFFIXES:
                self.deps[name] = frozenset(), frozenset()  # compiled: its imports are not ours to read
            else:
                is_package = path.stem == "__init__"
                scan = _scan(self.read(path), str(path), name, is_package)
                imports = set()
                for target, names, optional, line in scan.imports:
                    if self.spec(target) is None:
                        if target.split(".")[0] == self.root and not optional:
                            raise CodeVersionError(
                                f"code version: {path}:{line} imports {target!r}, which is not in {self.package_dir}"
                            )
                        continue
                    imports.add(target)
                    imports.update(f"{target}.{n}" for n in names if self.spec(f"{target}.{n}") is not None)
                self.deps[name] = frozenset(imports), frozenset(self.data_files(scan.paths))
        return self.deps[name]

    # -- data files -------------------------------------------------------------------------------

    def data_files(self, paths: Iterable[str | _PackagePath]) -> set[Path]:
        """The data files under each directory named (or holding a file named), inside the package."""
        files: set[Path] = set()
        for value in paths:
            if isinstance(value, _PackagePath):
                spec = self.spec(value.package)
                if spec is None or not spec.submodule_search_locations:
                    continue
                bases = [Path(p) for p in spec.submodule_search_locations]
                candidates = [Path(os.path.normpath(base.joinpath(*value.parts))) for base in bases]
            else:
                candidates = [Path(os.path.normpath(value))]
            for path in candidates:
                if not path.is_dir():
                    path = path.parent
                if path.is_dir() and path.is_relative_to(self.package_dir):
                    files.update(_data_files_under(path))
        return files


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _data_files_under(directory: Path) -> list[Path]:
    """Non-code files under ``directory``, not descending into subpackages, caches or hidden folders."""
    found = []
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith(".") or entry.name.endswith("~") or entry.name == "__pycache__":
            continue
        if entry.is_dir():
            if not (entry / "__init__.py").exists():
                found.extend(_data_files_under(entry))
        elif entry.is_file() and entry.suffix not in CODE_SUFFIXES:
            found.append(entry)
    return found


# ---------------------------------------------------------------------------------------------
# Reading one module's source: what it imports, which paths it builds (cached by content).


class _PackagePath:
    """A directory named through its package: ``PackageLoader("llmpipe.report", ".")``."""

    def __init__(self, package: str, parts: tuple[str, ...] = ()) -> None:
        self.package, self.parts = package, parts

    def joined(self, *parts: str) -> _PackagePath:
        return _PackagePath(self.package, self.parts + parts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _PackagePath) and (self.package, self.parts) == (other.package, other.parts)

    def __hash__(self) -> int:
        return hash((self.package, self.parts))


class _Scan:
    def __init__(self) -> None:
        # (module, names imported from it, inside try/except ImportError, line)
        self.imports: list[tuple[str, tuple[str, ...], bool, int]] = []
        self.paths: set[str | _PackagePath] = set()


@functools.lru_cache(maxsize=512)
def _scan(source: bytes, filename: str, module: str, is_package: bool) -> _Scan:
    tree = ast.parse(source, filename=filename)
    scan = _Scan()
    package = module if is_package else module.rpartition(".")[0]
    _ImportScanner(scan, package, module).visit(tree)
    _PathScanner(scan, filename, module, package).run(tree)
    return scan


class _ImportScanner(ast.NodeVisitor):
    """Every import statement, anywhere (module level, functions, ``if TYPE_CHECKING:``)."""

    def __init__(self, scan: _Scan, package: str, module: str) -> None:
        self.scan, self.package, self.module = scan, package, module
        self.optional = 0  # depth of try blocks that catch ImportError

    def visit_Try(self, node: ast.Try) -> None:
        catches = any(_catches_import_error(h.type) for h in node.handlers)
        self.optional += catches
        for statement in node.body:
            self.visit(statement)
        self.optional -= catches
        for child in [*node.handlers, *node.orelse, *node.finalbody]:
            self.visit(child)

    visit_TryStar = visit_Try

    def add(self, target: str, names: tuple[str, ...], line: int) -> None:
        self.scan.imports.append((target, names, self.optional > 0, line))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.add(alias.name, (), node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            if node.level - 1 > len(base) - 1:
                return
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        self.add(target, tuple(a.name for a in node.names if a.name != "*"), node.lineno)

    def visit_Call(self, node: ast.Call) -> None:
        # importlib.import_module("llmpipe.x") / __import__("llmpipe.x") with a literal name
        if _call_name(node) in ("import_module", "__import__") and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str) and not first.value.startswith("."):
                self.add(first.value, (), node.lineno)
        self.generic_visit(node)


def _catches_import_error(handler_type: ast.expr | None) -> bool:
    if handler_type is None:
        return True
    names = handler_type.elts if isinstance(handler_type, ast.Tuple) else [handler_type]
    return any(_dotted_tail(n) in IMPORT_ERRORS for n in names)


def _dotted_tail(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _call_name(node: ast.Call) -> str | None:
    return _dotted_tail(node.func)


def _constant_str(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


class _PathScanner:
    """The paths a module builds from its ``__file__`` or a package's name, evaluated statically.

    Understood: ``__file__``; ``Path(x)`` (and ``PurePath``, ``PosixPath``, ...); ``.resolve()``,
    ``.absolute()``, ``.expanduser()``; ``.parent``, ``.parents[n]``; ``x / "name"``,
    ``x.joinpath("a", "b")``; ``os.path.dirname/abspath/realpath/normpath(x)``,
    ``os.path.join(x, "a")``; ``PackageLoader(pkg[, dir])``; ``files(pkg)``, ``as_file(x)``;
    names bound to one such value. A join with a computed part (``x / f"{name}.txt"``) stands for
    ``x``'s directory, which is recorded: every outermost path expression is.
    """

    PATH_TYPES = frozenset({"Path", "PurePath", "PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"})
    IDENTITY_METHODS = frozenset({"resolve", "absolute", "expanduser"})
    IDENTITY_FUNCTIONS = frozenset({"abspath", "realpath", "normpath", "fspath", "as_file"})

    def __init__(self, scan: _Scan, filename: str, module: str, package: str) -> None:
        self.scan, self.filename, self.module, self.package = scan, filename, module, package
        self.bindings: dict[str, str | _PackagePath] = {}

    def run(self, tree: ast.Module) -> None:
        assignments = [
            (target.id, node.value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name)
        ]
        ambiguous: set[str] = set()
        for _ in range(len(assignments) + 1):  # to a fixpoint: chains of names (SCHEMA_FILE = SCHEMA_DIR / ...)
            bindings: dict[str, str | _PackagePath] = {}
            for name, value in assignments:
                evaluated = self.evaluate(value)
                if name in ambiguous or evaluated is None:
                    continue
                if name in bindings and bindings[name] != evaluated:
                    ambiguous.add(name)
                    del bindings[name]
                else:
                    bindings[name] = evaluated
            for name in ambiguous:
                bindings.pop(name, None)
            if bindings == self.bindings:
                break
            self.bindings = bindings
        self.record(tree)

    def record(self, node: ast.AST) -> None:
        value = self.evaluate(node) if isinstance(node, ast.expr) else None
        if value is not None:
            self.scan.paths.add(value)
            return
        for child in ast.iter_child_nodes(node):
            self.record(child)

    def evaluate(self, node: ast.expr) -> str | _PackagePath | None:
        """The path ``node`` stands for, when it is built from ``__file__`` or a package name; else None."""
        if isinstance(node, ast.Name):
            if node.id == "__file__":
                return self.filename
            return self.bindings.get(node.id)
        if isinstance(node, ast.Attribute):
            if node.attr == "parent":
                base = self.evaluate(node.value)
                return _parent(base) if base is not None else None
            return None
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "parents":
            base = self.evaluate(node.value.value)
            index = node.slice
            if base is not None and isinstance(index, ast.Constant) and isinstance(index.value, int):
                for _ in range(index.value + 1):
                    base = _parent(base)
                return base
            return None
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            base = self.evaluate(node.left)
            part = _constant_str(node.right)
            return _join(base, part) if base is not None and part is not None else None
        if isinstance(node, ast.Call):
            return self.evaluate_call(node)
        return None

    def evaluate_call(self, node: ast.Call) -> str | _PackagePath | None:
        name = _call_name(node)
        args = node.args
        if isinstance(node.func, ast.Attribute) and name in self.IDENTITY_METHODS | {"joinpath"}:
            base = self.evaluate(node.func.value)
            if base is None:
                return None
            if name == "joinpath":
                parts = [_constant_str(a) for a in args]
                return _join(base, *parts) if args and None not in parts else None
            return base
        if name in self.PATH_TYPES | self.IDENTITY_FUNCTIONS | {"dirname", "join"}:
            values = [self.evaluate(a) for a in args[:1]]
            if not values or values[0] is None:
                return None
            base = values[0]
            if name == "dirname":
                return _parent(base)
            if name == "join":
                parts = [_constant_str(a) for a in args[1:]]
                return _join(base, *parts) if None not in parts else None
            if name in self.PATH_TYPES and len(args) > 1:
                parts = [_constant_str(a) for a in args[1:]]
                return _join(base, *parts) if None not in parts else None
            return base
        if name in ("PackageLoader", "files") and args:
            package = self.package_name(args[0])
            if package is None:
                return None
            if name == "files":
                return _PackagePath(package)
            path = _constant_str(args[1]) if len(args) > 1 else "templates"
            for keyword in node.keywords:
                if keyword.arg == "package_path":
                    path = _constant_str(keyword.value)
            return _PackagePath(package).joined(path) if path is not None else None
        return None

    def package_name(self, node: ast.expr) -> str | None:
        if isinstance(node, ast.Name) and node.id in ("__name__", "__package__"):
            return self.module if node.id == "__name__" else self.package
        return _constant_str(node)


def _parent(value: str | _PackagePath) -> str | _PackagePath:
    if isinstance(value, _PackagePath):
        return value.joined("..")
    return os.path.dirname(value)


def _join(value: str | _PackagePath, *parts: str) -> str | _PackagePath:
    if isinstance(value, _PackagePath):
        return value.joined(*parts)
    return os.path.join(value, *parts)
