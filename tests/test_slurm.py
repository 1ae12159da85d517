"""The pipeline on a real SLURM cluster: a slice of the DAG through the slurm profile equals a local run.

The cluster is the single-node SLURM of shared/tools/local-slurm (munge + slurmctld + slurmd, started
in seconds, root only) with a fake GPU, so the pretrain job's `--gpus=1` request has to schedule.
Torch sees no CUDA there and trains on the CPU, with the same thread count as the local run, so the
two runs must write identical files.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, SMALL_WEB, WorkflowCopy

# Where start-local-slurm.sh lives: the team's shared tools next to the checkout, unless CI says otherwise.
LOCAL_SLURM = Path(os.environ.get("LLMPIPE_LOCAL_SLURM", REPO.parent / "shared" / "tools" / "local-slurm"))
# CI sets this so that a cluster that cannot start fails the test instead of skipping it.
REQUIRE_SLURM = os.environ.get("LLMPIPE_REQUIRE_SLURM") == "1"
THREADS = 2  # pretrain's OMP threads in both runs: CPU training is bit-identical only at equal counts
TIMEOUT = 900  # seconds for one Snakemake run; `timeout -k` because SIGTERM alone leaves it waiting

# A complete slice of the DAG, kept small: toy web -> ... -> dedup -> split -> tokenizer -> pack -> pretrain.
TARGETS = ["results/pack/train/header.json", "results/pretrain/model.safetensors"]
SLICE = {
    "toyweb": SMALL_WEB,
    "dedup": {"bands": 2},  # one SLURM job per band: fewer, cheaper jobs
    "tokenizer": {"vocab_size": 512},
    "pretrain": {"gpus": 1, "batch_size": 4, "tokens_per_step": 1024, "max_steps": 4, "warmup_steps": 1,
                 "eval_every": 2, "eval_sequences": 8, "checkpoint_every": 2},
}
# Written by each run but not part of what it computes. A checkpoint's state.pt holds Python's
# unseeded RNG state and a run fingerprint that hashes the pack header's wall_seconds; the weights
# next to it are compared.
VOLATILE_DIRS = {"logs", "benchmarks"}
VOLATILE_NAMES = {"state.pt"}
VOLATILE_KEYS = {"wall_seconds", "training_seconds", "seconds_this_run", "tokens_per_s", "mfu", "peak_rss_mb"}


def as_root() -> list[str] | None:
    """The command prefix that runs the cluster scripts as root (they install and start daemons)."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def cannot_start_reason() -> str | None:
    """Why this machine cannot run the local cluster, or None when it can."""
    if not (LOCAL_SLURM / "start-local-slurm.sh").is_file():
        return f"no start-local-slurm.sh in {LOCAL_SLURM} (set LLMPIPE_LOCAL_SLURM)"
    if as_root() is None:
        return "start-local-slurm.sh must run as root: not root and no password-less sudo"
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        return "no slurmctld installed and no apt-get to install it"
    return None


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running single-node cluster advertising gpu:1 (FAKE_GPU=1), always stopped afterwards."""
    reason = cannot_start_reason()
    if reason:
        if REQUIRE_SLURM:
            pytest.fail(f"LLMPIPE_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    root = as_root()
    try:
        start = subprocess.run([*root, "env", "FAKE_GPU=1", "bash", str(LOCAL_SLURM / "start-local-slurm.sh")],
                               capture_output=True, text=True, timeout=600)
        assert start.returncode == 0, f"start-local-slurm.sh failed:\n{start.stderr[-4000:]}"
        yield
    finally:
        subprocess.run([*root, "bash", str(LOCAL_SLURM / "stop-local-slurm.sh")], capture_output=True, timeout=120)


def slice_copy(root: Path) -> WorkflowCopy:
    root.mkdir()
    copy = WorkflowCopy(root)
    for section, values in SLICE.items():
        copy.update(section, **values)
    return copy


def slurm_test_profile(root: Path) -> Path:
    """The repo's slurm profile, pointed at the local cluster: its partition, no accounts, no sacct."""
    profile = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())
    profile["default-resources"]["slurm_partition"] = "debug"
    del profile["default-resources"]["slurm_account"]
    profile["default-resources"]["mem_mb"] = 1000  # the node is a laptop-sized VM, not a cluster node
    for resources in profile["set-resources"].values():
        resources["mem_mb"] = min(resources.get("mem_mb", 1000), 2000)
    profile.update({
        "cores": THREADS,
        "retries": 0,  # a failure must fail the test, not be retried into a pass
        "latency-wait": 5,
        "slurm-no-account": True,
        "slurm-status-command": "squeue",  # no accounting here: sacct would fail quietly and hang
        "slurm-init-seconds-before-status-checks": 2,
        "slurm-keep-successful-logs": True,
    })
    path = root / "profile-slurm-test" / "config.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return path.parent


def snakemake(copy: WorkflowCopy, *args: str) -> subprocess.CompletedProcess:
    # The SLURM jobs inherit this environment (sbatch --export=ALL): put this Python's `llmpipe` first.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = ["timeout", "-k", "30", str(TIMEOUT), sys.executable, "-m", "snakemake", *args, *TARGETS]
    proc = subprocess.run(cmd, cwd=copy.root, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed ({proc.returncode}) in {copy.root}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def output_files(results: Path) -> dict[str, Path]:
    return {p.relative_to(results).as_posix(): p for p in sorted(results.rglob("*"))
            if p.is_file() and p.relative_to(results).parts[0] not in VOLATILE_DIRS and p.name not in VOLATILE_NAMES}


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def assert_same_output(name: str, local: Path, cluster: Path) -> None:
    """Byte-equal (Parquet, WARC, token and pack binaries, weights); JSON equal without timings."""
    if name.endswith(".jsonl"):
        rows = [[without_timings(json.loads(line)) for line in p.read_text().splitlines()] for p in (local, cluster)]
        assert rows[0] == rows[1], f"{name} differs between the local and the SLURM run"
    elif name.endswith(".json"):
        assert without_timings(json.loads(cluster.read_text())) == without_timings(json.loads(local.read_text())), (
            f"{name} differs between the local and the SLURM run")
    else:
        assert cluster.read_bytes() == local.read_bytes(), f"{name} differs between the local and the SLURM run"


def pretrain_job_request(copy: WorkflowCopy) -> str:
    """`scontrol show job` of the SLURM job that ran pretrain (finished jobs stay listed for MinJobAge)."""
    logs = sorted((copy.root / ".snakemake" / "slurm_logs" / "rule_pretrain").rglob("*.log"))
    assert logs, "no SLURM log of the pretrain job: did it run through SLURM?"
    job_id = re.match(r"\d+", logs[-1].name)
    assert job_id, logs[-1]
    show = subprocess.run(["scontrol", "show", "job", "-o", job_id.group()], capture_output=True, text=True)
    assert show.returncode == 0, show.stderr
    return show.stdout


def job_block(dry_run: str, rule: str) -> str:
    """The lines a dry run prints for the first job of `rule`."""
    match = re.search(rf"^(local)?rule {rule}:\n(.*?)(?=^\S|\Z)", dry_run, re.M | re.S)
    assert match, f"no {rule} job in the dry run:\n{dry_run[-3000:]}"
    return match.group(2)


def test_slurm_profile_as_shipped_plans_config_gpus_and_rule_resources(workflow_copy):
    """No cluster needed: the profile parses, names real rules, and pretrain asks for pretrain.gpus GPUs."""
    profile = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())
    rules = set(workflow_copy.snakemake("--list-rules").stdout.split())
    assert set(profile["set-resources"]) <= rules, (
        f"set-resources for unknown rules: {set(profile['set-resources']) - rules}"
    )

    workflow_copy.update("pretrain", gpus=2)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--workflow-profile", "workflow/profiles/slurm", "-n",
         "results/pretrain/model.safetensors"], cwd=workflow_copy.root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    pretrain = job_block(proc.stdout + proc.stderr, "pretrain")
    resources = dict(re.findall(r"(\w+)=([^,\s]+)", re.search(r"resources: (.*)", pretrain).group(1)))
    assert resources["gpu"] == "2", "the profile must not cap pretrain.gpus (a --resources gpu limit would)"
    assert resources["slurm_partition"] == "YOUR_PARTITION" and resources["slurm_account"] == "YOUR_ACCOUNT"
    assert resources["runtime"] == str(profile["set-resources"]["pretrain"]["runtime"])
    assert f"threads: {profile['cores']}" in pretrain


@pytest.mark.slow
def test_slice_through_the_slurm_profile_equals_a_local_run(slurm_cluster, tmp_path):
    local, cluster = slice_copy(tmp_path / "local"), slice_copy(tmp_path / "cluster")
    profile = slurm_test_profile(tmp_path)
    with ThreadPoolExecutor(1) as pool:  # the local run goes on while SLURM schedules the other
        local_run = pool.submit(
            snakemake, local, "--cores", str(THREADS), "--workflow-profile", "workflow/profiles/default"
        )
        snakemake(cluster, "--workflow-profile", str(profile))
        local_run.result()

    request = pretrain_job_request(cluster)
    assert re.search(r"TresPerJob=\S*gpu:1\b", request), f"pretrain did not ask SLURM for a GPU:\n{request}"
    assert "JobState=COMPLETED" in request, request

    local_files, cluster_files = output_files(local.root / "results"), output_files(cluster.root / "results")
    assert sorted(cluster_files) == sorted(local_files)
    assert "pretrain/model.safetensors" in local_files and "tokenizer/tokenizer.json" in local_files
    for name in local_files:
        assert_same_output(name, local_files[name], cluster_files[name])

