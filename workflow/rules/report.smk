# The end of the DAG: every stage's results -> results/report.html (one self-contained page).
# Its inputs list every file the report reads, so it is rebuilt whenever any of them changes.
# Benchmark files are read from results/benchmarks/ but are not inputs: Snakemake cannot
# depend on them, and they only change when a rule reruns, which changes an input here too.

REPORT_FILTER_STAGES = ["url_filter", "extract", "quality", "dedup"]
REPORT_MODELS = ["pretrain", "sft", "dpo", "rl"]


# Every file `llmpipe report` reads, by kind (the run's stats, examples, metrics).
REPORT_SPLITS = ["train", "val", "test"]
REPORT_INPUTS = {
    "toyweb": [f"{RESULTS}/toyweb/stats.json", f"{RESULTS}/toyweb/truth.parquet"]
    if config["input"]["source"] == "toyweb"
    else [],
    "stats": expand(
        f"{RESULTS}/{{stage}}/stats/{{shard}}.json",
        stage=["ingest", *REPORT_FILTER_STAGES, "split"],
        shard=SHARDS,
    ),
    "rejects": expand(f"{RESULTS}/{{stage}}/rejects/{{shard}}.parquet", stage=REPORT_FILTER_STAGES, shard=SHARDS),
    "docs": expand(f"{RESULTS}/{{stage}}/docs/{{shard}}.parquet", stage=REPORT_FILTER_STAGES, shard=SHARDS),
    "corpus": expand(f"{RESULTS}/split/{{split}}/{{shard}}.parquet", split=REPORT_SPLITS, shard=SHARDS),
    "clusters": [f"{RESULTS}/dedup/clusters.parquet", f"{RESULTS}/dedup/clusters.stats.json"],
    "tokenizer": [f"{RESULTS}/tokenizer/tokenizer.json", f"{RESULTS}/tokenizer/stats.json"],
    "tokens": expand(f"{RESULTS}/tokens/{{split}}/{{shard}}.json", split=REPORT_SPLITS, shard=SHARDS),
    "pack": expand(f"{RESULTS}/pack/{{split}}/header.json", split=REPORT_SPLITS),
    "training": expand(
        f"{RESULTS}/{{model}}/{{name}}", model=REPORT_MODELS, name=["metrics.jsonl", "stats.json"]
    ),
    "evaluate": expand(f"{RESULTS}/evaluate/{{model}}.json", model=REPORT_MODELS),
}


rule report:
    input:
        **REPORT_INPUTS,
    output:
        html=report(
            f"{RESULTS}/report.html",
            caption="../report/report.rst",
            category="Report",
        ),
    params:
        cfg=section("report"),
        run_config=canonical_json(config),
        code=code_version("report/*.py", "report/*.j2"),
        results=lambda wc, output: Path(output.html).parent,
        benchmarks=lambda wc, output: Path(output.html).parent / "benchmarks",
    log:
        log_path("report", "report"),
    benchmark:
        benchmark_path("report", "report")
    conda:
        "../envs/llmpipe.yaml"
    threads: 1
    shell:
        "llmpipe report --params {params.cfg:q} --run-config {params.run_config:q} --results {params.results:q}"
        " --benchmarks {params.benchmarks:q} --output {output.html:q} > {log:q} 2>&1"
