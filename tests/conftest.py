"""Shared fixtures: tiny models and model directories over a byte tokenizer, a pretraining run
launched as the rule launches it, and a private copy of the workflow run with real Snakemake."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from llmpipe.config import load_config
from llmpipe.model.directory import save_model_dir
from llmpipe.model.gpt import GPT, GPTConfig
from llmpipe.tasks.heldout import from_config
from llmpipe.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parent.parent
# the default config's held-out share, for tests that build the world's data in-process
HELD = from_config(load_config(REPO / "config.yaml")["world"])
WORLD = json.dumps(load_config(REPO / "config.yaml")["world"])  # the --world JSON a rule passes


def make_byte_tokenizer() -> Tokenizer:
    """256 byte tokens and the special tokens, no merges: any text, no training."""
    return Tokenizer([bytes([i]) for i in range(256)])


def make_tiny_model(seed: int = 0, **overrides) -> GPT:
    """A random 1-layer GPT (seeded), in eval mode; ``overrides`` are GPTConfig fields."""
    torch.manual_seed(seed)
    cfg = dict(vocab_size=make_byte_tokenizer().vocab_size, context_length=64, n_layer=1, n_head=2, n_kv_head=2,
               n_embd=32)
    return GPT(GPTConfig(**{**cfg, **overrides})).eval()


@pytest.fixture(scope="session")
def byte_tokenizer() -> Tokenizer:
    return make_byte_tokenizer()


@pytest.fixture(scope="session")
def tiny_model() -> Callable[..., GPT]:
    """``tiny_model(seed=0, **config)``: a fresh random tiny GPT."""
    return make_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Callable[..., Path]:
    """``tiny_model_dir(seed=0, **config)``: a tiny GPT over the byte tokenizer saved as a model
    directory (what every stage loads), in a fresh directory."""

    def make(seed: int = 0, **overrides) -> Path:
        root = tmp_path_factory.mktemp("model_dir")
        tokenizer = make_byte_tokenizer()
        tokenizer.save(root / "tokenizer.json")
        model = make_tiny_model(seed, **{"context_length": 192, **overrides})
        save_model_dir(root / "model", model, root / "tokenizer.json")
        return root / "model"

    return make


def write_jsonl_lines(path: Path, rows: list) -> Path:
    """Rows as JSONL; a str row is written as it is (to plant malformed lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def pretrain_settings(**overrides) -> dict:
    """The schema's defaults (the real config path), made small and CPU-only for a test."""
    config = load_config(REPO / "config.yaml")
    params = {**config["pretrain"], "device": "cpu", "batch_size": 8, "tokens_per_step": 512,
              "max_steps": 40, "warmup_steps": 5, "eval_every": 20, "eval_sequences": 24,
              "checkpoint_every": 10, **overrides}
    model = {**config["model"], "n_layer": 2, "n_head": 4, "n_kv_head": 2, "n_embd": 64}
    return {"params": params, "model": model}


def pretrain_cmd(packed: Path, out: Path, cfg: dict, launcher: list[str] | None = None, val: str = "val") -> list[str]:
    """``llmpipe pretrain`` on ``packed/{train,val}`` as the rule runs it (``launcher``: e.g. torchrun)."""
    launcher = launcher or [sys.executable, "-m", "llmpipe.cli"]
    return [
        *launcher, "pretrain", "--params", json.dumps(cfg["params"]), "--model-params", json.dumps(cfg["model"]),
        "--train", str(packed / "train"), "--val", str(packed / val), "--tokenizer", str(packed / "tokenizer.json"),
        "--output", str(out), "--stats", str(out / "stats.json"),
    ]


def run_pretrain(
    packed: Path, out: Path, cfg: dict, launcher: list[str] | None = None, env=None, val: str = "val"
) -> str:
    proc = subprocess.run(pretrain_cmd(packed, out, cfg, launcher, val), capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout + proc.stderr


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
        # targets first: `--quiet` takes a list and would swallow them
        proc = self.snakemake(*targets, "-n", "--quiet", "rules")
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


# A few steps of everything: the point is the page, not the model.
TINY_RUN = {
    "toyweb": SMALL_WEB,
    "tokenizer": {"vocab_size": 512},
    "pack": {"context_length": 64},
    "model": {"n_layer": 2, "n_embd": 64, "n_head": 2, "n_kv_head": 2, "mlp_hidden": 192},
    "pretrain": {"batch_size": 8, "tokens_per_step": 512, "max_steps": 20, "warmup_steps": 2,
                 "eval_every": 10, "eval_sequences": 8, "checkpoint_every": 10},
    "evaluate": {"arithmetic_problems": 8, "sample_max_new_tokens": 8, "fact_probes": 24,
                 "chat_fact_questions": 8, "chat_arithmetic_problems": 8, "chat_max_new_tokens": 8,
                 "memorisation_prefixes": 8, "memorisation_prefix_tokens": 16, "memorisation_new_tokens": 24,
                 "memorisation_span": 16},
    "posttrain_data": {"sft_conversations": 64, "sft_heldout_conversations": 8, "dpo_pairs": 32,
                       "dpo_heldout_pairs": 8, "rl_train_problems": 32, "rl_test_problems": 8},
    "sft": {"epochs": 1, "eval_every": 4, "eval_fact_questions": 8, "eval_max_new_tokens": 8},
    "dpo": {"epochs": 1, "batch_size": 8, "eval_every": 2, "eval_fact_questions": 8, "eval_max_new_tokens": 8},
    "rl": {"steps": 3, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 8, "eval_every": 2,
           "eval_problems": 4, "eval_pass_k": 2},
}


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> WorkflowCopy:
    """The default target (report + every model's evaluation) of a tiny run, built once per
    session and shared by the slow end-to-end tests; they must leave its config as they found it."""
    copy = WorkflowCopy(tmp_path_factory.mktemp("tiny_pipeline"))
    config = copy.config()
    for section, values in TINY_RUN.items():
        config.setdefault(section, {}).update(values)
    copy.set_config(config)
    copy.snakemake(timeout=1200)
    return copy
