"""Shared fixtures: a private copy of the workflow in tmp_path, run with real Snakemake."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


class WorkflowCopy:
    """The repo's Snakefile, workflow/ and config.yaml copied into a scratch directory."""

    def __init__(self, root: Path):
        self.root = root
        shutil.copy(REPO / "Snakefile", root / "Snakefile")
        shutil.copytree(REPO / "workflow", root / "workflow")
        shutil.copy(REPO / "config.yaml", root / "config.yaml")

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    def config(self) -> dict:
        return yaml.safe_load(self.config_path.read_text())

    def set_config(self, config: dict) -> None:
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def update(self, section: str, **values) -> None:
        config = self.config()
        config.setdefault(section, {}).update(values)
        self.set_config(config)

    def snakemake(self, *args: str, check: bool = True, timeout: int = 1800):
        """Run the snakemake CLI (as a user would) in the copy; return the completed process."""
        cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
        proc = subprocess.run(
            cmd, cwd=self.root, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
            )
        return proc

    def planned_jobs(self, *targets: str) -> dict[str, int]:
        """Rule name -> job count that a dry run would execute (empty when up to date)."""
        proc = self.snakemake("-n", "--quiet", "rules", *targets)
        return parse_job_table(proc.stdout + proc.stderr)


def parse_job_table(output: str) -> dict[str, int]:
    """Read Snakemake's 'Job stats' table (job / count) from a dry run's output."""
    jobs: dict[str, int] = {}
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("job") and "count" in line:
            for row in lines[i + 2 :]:
                parts = row.split()
                if len(parts) != 2 or not parts[1].isdigit():
                    break
                if parts[0] != "total":
                    jobs[parts[0]] = int(parts[1])
            break
    return jobs


@pytest.fixture
def workflow_copy(tmp_path: Path) -> WorkflowCopy:
    return WorkflowCopy(tmp_path)


SMALL_WEB = {"seed": 7, "files": 2, "articles": 120}


@pytest.fixture
def small_web(workflow_copy: WorkflowCopy) -> WorkflowCopy:
    """A workflow copy whose toy web is small enough for a test to run the data DAG."""
    workflow_copy.update("toyweb", **SMALL_WEB)
    return workflow_copy
