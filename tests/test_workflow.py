"""The workflow as users drive it: schema errors, lint, dry runs, and what a config edit reruns."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from llmpipe.config import ConfigError, load_config
from tests.conftest import REPO, SMALL_WEB

DATA_RULES = {
    "toyweb", "ingest", "url_filter", "extract", "quality",
    "dedup_signatures", "dedup_buckets", "dedup_clusters", "dedup_filter", "split",
}


def test_default_config_is_valid_and_gets_defaults(tmp_path):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    del config["dedup"]["threshold"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = load_config(path)
    assert loaded["dedup"]["threshold"] == 0.7  # the schema's default filled in


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("dedup", "treshold", 0.5, "treshold"),  # a typo is an error, not a silent default
        ("toyweb", "files", "four", "toyweb.files"),
        ("extract", "backend", "beautifulsoup", "extract.backend"),
    ],
)
def test_config_errors_name_the_key(tmp_path, section, key, value, message):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config[section][key] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_snakemake_rejects_bad_config_before_any_job(workflow_copy):
    workflow_copy.update("dedup", treshold=0.5)
    proc = workflow_copy.snakemake("-n", check=False)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "treshold" in output
    assert "Job stats" not in output


def test_lint_is_clean(workflow_copy):
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"],
        cwd=workflow_copy.root, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dry_run_plans_one_job_per_shard(small_web):
    jobs = small_web.planned_jobs()
    files = SMALL_WEB["files"]
    assert DATA_RULES <= set(jobs)
    assert jobs["toyweb"] == 1
    for rule in ("ingest", "url_filter", "extract", "quality", "dedup_signatures", "dedup_filter", "split"):
        assert jobs[rule] == files, rule
    assert jobs["dedup_buckets"] == small_web.config()["dedup"]["bands"]
    assert jobs["dedup_clusters"] == 1
    assert jobs["decontaminate"] == jobs["eval_sets"] == 1  # one index, one table per evaluation set


def test_warc_input_makes_one_shard_per_file(workflow_copy, tmp_path):
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    for name in ("CC-MAIN-a.warc.gz", "CC-MAIN-b.warc.gz", "other.warc"):
        (crawl / name).write_bytes(b"")
    workflow_copy.update("input", source="warc", warc=[str(crawl / "*.warc.gz")])
    jobs = workflow_copy.planned_jobs()
    assert "toyweb" not in jobs
    assert jobs["ingest"] == 2


@pytest.mark.slow
def test_data_dag_runs_then_reruns_only_what_a_config_edit_touches(tiny_pipeline):
    """The whole default target ran (tiny_pipeline); a rerun does nothing; a dedup edit reruns
    dedup and everything downstream of it, nothing upstream; reordered keys rerun nothing."""
    run = tiny_pipeline
    results = run.root / "results"
    for split in ("train", "val", "test"):
        assert len(list((results / "split" / split).glob("*.parquet"))) == SMALL_WEB["files"]
    assert run.planned_jobs() == {}, "a second run must do nothing"

    run.update("dedup", threshold=0.8)
    rerun = set(run.planned_jobs())
    assert {"dedup_buckets", "dedup_clusters", "dedup_filter", "split"} <= rerun
    assert {"tokenizer", "pretrain", "sft", "dpo", "rl", "report"} <= rerun
    assert not rerun & {"toyweb", "ingest", "url_filter", "extract", "quality", "dedup_signatures"}

    # Back to the values that ran, with the keys reordered: nothing to do.
    config = run.config()
    config["dedup"]["threshold"] = 0.7
    config["dedup"] = dict(reversed(list(config["dedup"].items())))
    run.set_config(config)
    assert run.planned_jobs() == {}

    # Decontamination sits between split and tokenisation, and before sft/dpo/rl: an n-gram edit
    # reruns it and every model, not the data stages or the evaluation sets.
    run.update("decontaminate", ngram=8)
    rerun = set(run.planned_jobs())
    assert {"decontaminate", "tokenizer", "tokenize", "pretrain", "sft", "dpo", "rl", "evaluate", "report"} <= rerun
    assert not rerun & {"split", "posttrain_data", "eval_sets"}
    # An evaluation-set key rewrites the sets, so decontamination (and so every model) reruns too.
    run.update("decontaminate", ngram=13)
    run.update("evaluate", arithmetic_problems=9)
    assert {"eval_sets", "decontaminate", "pretrain", "evaluate"} <= set(run.planned_jobs())
    run.update("evaluate", arithmetic_problems=8)
    assert run.planned_jobs() == {}
