"""Where and with what the report was built: git commit, package versions, hardware."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

PACKAGES = ("llmpipe", "torch", "numpy", "pyarrow", "snakemake", "trafilatura", "resiliparse",
            "datasketch", "safetensors", "matplotlib", "jinja2")


def git_commit(cwd: Path) -> str:
    """``git rev-parse HEAD`` (+ ``-dirty`` when tracked files changed), or ``unknown``."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head or "unknown"


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def hardware() -> dict[str, str]:
    """The machine the report ran on (training devices are in each stage's stats)."""
    info = {"platform": platform.platform(), "cpu": cpu_model(), "cpu cores": str(os.cpu_count())}
    memory = memory_gib()
    if memory is not None:
        info["memory"] = f"{memory:.1f} GiB"
    try:
        import torch

        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            info["gpus"] = ", ".join(names)
        else:
            info["gpus"] = "none (CUDA unavailable)"
    except ImportError:
        info["gpus"] = "unknown (torch not installed)"
    return info
