"""A regular install works, not just an editable one: a wheel of the project, installed into a
fresh virtual environment, ships the schemas and every data file its stages read, runs a stage
from outside the checkout, and a copy of the workflow without the llmpipe source validates its
config and plans its jobs against that installed package."""
from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, WorkflowCopy, parse_job_table

pytestmark = pytest.mark.slow

# What a clean checkout would not have: build outputs and the state of runs. The wheel is built
# from a copy without them, so it never picks up stale files from an earlier build/lib (setuptools
# does not clean it) and the build writes nothing into the checkout.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", "build", "dist", "results", ".snakemake", "*.egg-info", "__pycache__", "*.so",
    ".hypothesis", ".pytest_cache", ".ruff_cache", "bench-data", ".venv", "venv",
)
# Files under llmpipe/ that are code, not data the stages read at run time.
CODE_SUFFIXES = {".py", ".pyc", ".so", ".pyx", ".c"}


def run(cmd: list, venv: Path, cwd: Path, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command as a user of the venv would: its bin/ first on PATH, nothing of the checkout
    on the path, from a directory outside the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    cmd = [str(c) for c in cmd]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        )
    return proc


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh venv reusing this interpreter's packages (torch & co.), with llmpipe from a wheel."""
    root = tmp_path_factory.mktemp("install")
    source, wheels, env = root / "source", root / "wheels", root / "venv"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE, symlinks=True)
    # build isolation: setuptools, wheel and Cython come from PyPI, as for any user
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", wheels, source], env, root, timeout=900)
    (wheel,) = wheels.glob("llmpipe-*.whl")
    run([sys.executable, "-m", "venv", "--system-site-packages", env], env, root)
    if sys.prefix != sys.base_prefix:
        # Run from inside a venv, --system-site-packages reaches only the base interpreter's
        # packages; add this venv's, after the new venv's own site-packages (so its llmpipe wins).
        dirs = [p for p in site.getsitepackages() if Path(p).is_dir()]
        (purelib(env) / "_outer_site.pth").write_text(
            f"import site; list(map(site.addsitedir, {dirs!r}))\n"
        )
    # --ignore-installed: the editable llmpipe that the system site-packages also holds is
    # neither touched nor taken for this one
    run([env / "bin" / "python", "-m", "pip", "install", "--no-deps", "--ignore-installed", "-q", wheel],
        env, root)
    return env


def purelib(env: Path) -> Path:
    (path,) = (env / "lib").glob("python3*/site-packages")
    return path


def test_installed_package_is_the_venvs_and_ships_its_data(venv: Path, tmp_path: Path):
    probe = (
        "import json, sys, llmpipe, llmpipe._bpe, llmpipe._minhash, llmpipe.config as c;"
        "print(json.dumps({'file': llmpipe.__file__, 'bpe': llmpipe._bpe.__file__,"
        " 'minhash': llmpipe._minhash.__file__, 'schema': str(c.SCHEMA_FILE), 'path': sys.path}))"
    )
    found = json.loads(run([venv / "bin" / "python", "-c", probe], venv, tmp_path).stdout)
    package = Path(found["file"]).parent
    assert package == purelib(venv) / "llmpipe", found["file"]  # not the editable one in REPO
    for key in ("bpe", "minhash", "schema"):
        assert Path(found[key]).is_relative_to(package), (key, found[key])
    assert not any(p and Path(p).resolve() == REPO for p in found["path"]), found["path"]

    # every file the stages read at run time (schemas, blocklists, report template, ...) is there
    data = {
        p.relative_to(REPO / "llmpipe") for p in (REPO / "llmpipe").rglob("*")
        if p.is_file() and p.suffix not in CODE_SUFFIXES and "__pycache__" not in p.parts
    }
    assert Path("schemas/config.schema.yaml") in data and Path("schemas/common.schema.yaml") in data
    missing = sorted(str(p) for p in data if not (package / p).is_file())
    assert not missing, f"not shipped in the wheel: {missing}"
    # and the Python modules too (a subpackage without __init__.py would be left out)
    modules = {p.relative_to(REPO / "llmpipe") for p in (REPO / "llmpipe").rglob("*.py")}
    missing = sorted(str(p) for p in modules if not (package / p).is_file())
    assert not missing, f"modules not in the wheel: {missing}"


def test_a_stage_runs_from_the_install_with_a_config_file(venv: Path, tmp_path: Path):
    """`llmpipe url-filter --config` loads the schema (from the package) and the shipped blocklists."""
    urls = ["https://www.example.com/articles/paris", "http://hot-singles-tonight.example/",
            "http://93.184.216.34/index.html"]
    shard = tmp_path / "raw.parquet"
    write = (
        "import sys, json, pyarrow as pa, pyarrow.parquet as pq\n"
        "from llmpipe.data.documents import RAW\n"
        "urls = json.loads(sys.argv[2])\n"
        "rows = [dict(id=f'doc-{i}', url=u, html='<html><body><p>page</p></body></html>', charset='utf-8',\n"
        "             charset_source='http-header', content_type='text/html', http_status=200,\n"
        "             date='2024-01-01T00:00:00Z', warc_file='crawl.warc.gz') for i, u in enumerate(urls)]\n"
        "pq.write_table(pa.Table.from_pylist(rows, schema=RAW), sys.argv[1])\n"
    )
    run([venv / "bin" / "python", "-c", write, shard, json.dumps(urls)], venv, tmp_path)
    config = tmp_path / "config.yaml"
    shutil.copy(REPO / "config.yaml", config)
    kept, rejects, stats = tmp_path / "kept.parquet", tmp_path / "rejects.parquet", tmp_path / "stats.json"
    run([venv / "bin" / "llmpipe", "url-filter", "--config", config, "--input", shard, "--output", kept,
         "--rejects", rejects, "--stats", stats], venv, tmp_path)
    assert kept.is_file() and rejects.is_file()
    counts = json.loads(stats.read_text())
    assert counts["docs_in"] == 3 and counts["docs_out"] == 1
    assert counts["removed"] == {"blocklist:adult": 1, "ip_host": 1}


def test_a_workflow_copy_without_the_source_validates_and_plans(venv: Path, tmp_path: Path):
    """Snakefile + workflow/ + config.yaml only: config validation (Snakemake's and llmpipe's)
    reads the installed package's schemas, and the dry run plans every stage."""
    (tmp_path / "wf").mkdir()
    copy = WorkflowCopy(tmp_path / "wf")
    assert not (copy.root / "llmpipe").exists() and not (copy.root / "workflow" / "schemas").exists()
    proc = run([venv / "bin" / "python", "-m", "snakemake", "-n", "--cores", "1"], venv, copy.root)
    jobs = parse_job_table(proc.stdout + proc.stderr)
    assert {"toyweb", "ingest", "url_filter", "pretrain", "sft", "dpo", "rl", "report", "all"} <= set(jobs), jobs

    # a bad key is still rejected before any job, by the installed schema
    copy.update("pretrain", lr=0)
    bad = run([venv / "bin" / "python", "-m", "snakemake", "-n", "--cores", "1"], venv, copy.root, check=False)
    assert bad.returncode != 0 and "Job stats" not in bad.stdout + bad.stderr
    assert "less than or equal to the minimum of 0" in bad.stdout + bad.stderr
