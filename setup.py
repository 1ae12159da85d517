"""Build the Cython extensions in ext/ as modules of the llmpipe package.

Every ext/<name>.pyx becomes the compiled module ``llmpipe._<name>``; metadata lives in
pyproject.toml.
"""
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
SOURCES = sorted((HERE / "ext").glob("*.pyx"))

extensions = [
    Extension(
        f"llmpipe._{src.stem}",
        [str(src.relative_to(HERE))],
        include_dirs=["ext"],
        depends=[str(h.relative_to(HERE)) for h in (HERE / "ext").glob("*.h")],
        extra_compile_args=["-O3"],
    )
    for src in SOURCES
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
        build_dir="build/cython",  # generated C stays out of ext/, which holds hand-written C
    ),
)
