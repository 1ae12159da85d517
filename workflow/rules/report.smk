# The end of the DAG: every stage's results -> results/report.html (one self-contained page).
# Its inputs list every file the report reads, so it is rebuilt whenever any of them changes.
# Benchmark files are read from results/benchmarks/ but are not inputs: Snakemake cannot
# depend on them, and they only change when a rule reruns, which changes an input here too.

# Every file `llmpipe report` reads, by kind (the run's stats, examples, metrics).
REPORT_INPUTS = {
    "toyweb": [layout.toyweb_stats_file(RESULTS), layout.toyweb_truth_file(RESULTS)]
    if config["input"]["source"] == "toyweb"
    else [],
    "stats": [layout.shard_file(RESULTS, stage, "stats", shard) for stage in FUNNEL_STAGES for shard in SHARDS],
    "rejects": [layout.shard_file(RESULTS, stage, "rejects", shard) for stage in FILTER_STAGES for shard in SHARDS],
    "docs": [layout.shard_file(RESULTS, stage, "docs", shard) for stage in FILTER_STAGES for shard in SHARDS],
    "corpus": [layout.split_file(RESULTS, split, shard) for split in SPLITS for shard in SHARDS],
    "clusters": [layout.clusters_file(RESULTS), layout.clusters_stats_file(RESULTS)],
    "tokenizer": [layout.tokenizer_file(RESULTS), layout.tokenizer_stats_file(RESULTS)],
    "tokens": [layout.tokens_file(RESULTS, split, shard, "header") for split in SPLITS for shard in SHARDS],
    "pack": [layout.packed_file(RESULTS, split, "header.json") for split in SPLITS],
    "training": [
        path
        for stage in MODEL_STAGES
        for path in (layout.metrics_file(RESULTS, stage), layout.training_stats_file(RESULTS, stage))
    ],
    "evaluate": [layout.evaluation_file(RESULTS, stage) for stage in MODEL_STAGES],
    "decontaminate": [layout.contamination_file(RESULTS), layout.decontaminate_stats_file(RESULTS)],
}


rule report:
    input:
        **REPORT_INPUTS,
    output:
        html=report(
            layout.report_file(RESULTS),
            caption="../report/report.rst",
            category="Report",
        ),
    params:
        cfg=section("report"),
        run_config=canonical_json(config),
        code=stage_code("report"),
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
