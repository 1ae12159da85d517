# The data half of the DAG: toy web -> ingest -> URL filter -> extract -> quality -> dedup -> split.
# One job per shard (WARC file) everywhere except the dedup clustering, which sees all shards.


rule toyweb:
    output:
        warcs=[layout.toyweb_warc_file(RESULTS, shard) for shard in SHARDS]
        if config["input"]["source"] == "toyweb"
        else [],
        truth=layout.toyweb_truth_file(RESULTS),
        stats=layout.toyweb_stats_file(RESULTS),
    params:
        cfg=section("toyweb"),
        world=section("world"),
        code=stage_code("toyweb"),
    log:
        log_path("toyweb", "toyweb"),
    benchmark:
        benchmark_path("toyweb", "toyweb")
    conda:
        "../envs/llmpipe.yaml"
    threads: 1
    shell:
        "llmpipe toyweb --params {params.cfg:q} --world {params.world:q} --warc {output.warcs:q}"
        " --truth {output.truth:q} --stats {output.stats:q} > {log:q} 2>&1"


rule ingest:
    input:
        warc=lambda wc: WARCS[wc.shard],
    output:
        docs=layout.shard_file(RESULTS, "ingest", "docs", "{shard}"),
        stats=layout.shard_file(RESULTS, "ingest", "stats", "{shard}"),
    params:
        cfg=section("ingest"),
        code=stage_code("ingest"),
    log:
        log_path("ingest"),
    benchmark:
        benchmark_path("ingest")
    conda:
        "../envs/llmpipe.yaml"
    threads: 1
    shell:
        "llmpipe ingest --params {params.cfg:q} --input {input.warc:q}"
        " --output {output.docs:q} --stats {output.stats:q} > {log:q} 2>&1"


rule url_filter:
    input:
        docs=rules.ingest.output.docs,
    output:
        **shard_outputs("url_filter"),
    params:
        cfg=section("url_filter"),
        code=stage_code("url-filter"),
    log:
        log_path("url_filter"),
    benchmark:
        benchmark_path("url_filter")
    conda:
        "../envs/llmpipe.yaml"
    threads: 1
    shell:
        "llmpipe url-filter --params {params.cfg:q} --input {input.docs:q} --output {output.docs:q}"
        " --rejects {output.rejects:q} --stats {output.stats:q} > {log:q} 2>&1"


rule extract:
    input:
        docs=rules.url_filter.output.docs,
    output:
        **shard_outputs("extract"),
    params:
        cfg=section("extract"),
        code=stage_code("extract"),
    log:
        log_path("extract"),
    benchmark:
        benchmark_path("extract")
    conda:
        "../envs/llmpipe.yaml"
    threads: 1
    shell:
        "llmpipe extract --params {params.cfg:q} --input {input.docs:q} --output {output.docs:q}"
        " --rejects {output.rejects:q} --stats {output.stats:q} > {log:q} 2>&1"


rule quality:
    input:
        docs=rules.extract.output.docs,
    output:
        **shard_outputs("quality"),
    params:
        cfg=section("quality"),
        code=stage_code("quality"),
    log:
        log_path("quality"),
    benchmark:
        benchmark_path("quality")
    conda:
        "../envs/llmpipe.yaml"
    threads: 1
    shell:
        "llmpipe quality --params {params.cfg:q} --input {input.docs:q} --output {output.docs:q}"
        " --rejects {output.rejects:q} --stats {output.stats:q} > {log:q} 2>&1"


rule dedup_signatures:
    input:
        docs=rules.quality.output.docs,
    output:
        signatures=f"{RESULTS}/dedup/signatures/{{shard}}.npz",
    params:
        cfg=section("dedup", keys=["bands", "rows", "seed", "ngram", "hash"]),
        code=stage_code("dedup-signatures"),
    log:
        log_path("dedup_signatures"),
    benchmark:
        benchmark_path("dedup_signatures")
    conda:
        "../envs/llmpipe.yaml"
    threads: 1
    shell:
        "llmpipe dedup-signatures --params {params.cfg:q} --input {input.docs:q}"
        " --output {output.signatures:q} > {log:q} 2>&1"


rule dedup_buckets:
    input:
        signatures=expand(rules.dedup_signatures.output.signatures, shard=SHARDS),
    output:
        pairs=f"{RESULTS}/dedup/buckets/{{band}}.parquet",
    params:
        cfg=section("dedup"),
        code=stage_code("dedup-buckets"),
    log:
        log_path("dedup_buckets", "{band}"),
    benchmark:
        benchmark_path("dedup_buckets", "{band}")
    conda:
        "../envs/llmpipe.yaml"
    threads: 1
    shell:
        "llmpipe dedup-buckets --params {params.cfg:q} --band {wildcards.band}"
        " --input {input.signatures:q} --output {output.pairs:q} > {log:q} 2>&1"


rule dedup_clusters:
    input:
        signatures=expand(rules.dedup_signatures.output.signatures, shard=SHARDS),
        pairs=expand(rules.dedup_buckets.output.pairs, band=range(config["dedup"]["bands"])),
    output:
        clusters=layout.clusters_file(RESULTS),
        stats=report(layout.clusters_stats_file(RESULTS), caption="../report/dedup_clusters.rst", category="Data"),
    params:
        cfg=section("dedup"),
        code=stage_code("dedup-clusters"),
    log:
        log_path("dedup_clusters", "clusters"),
    benchmark:
        benchmark_path("dedup_clusters", "clusters")
    conda:
        "../envs/llmpipe.yaml"
    threads: 1
    shell:
        "llmpipe dedup-clusters --params {params.cfg:q} --signatures {input.signatures:q}"
        " --pairs {input.pairs:q} --output {output.clusters:q} --stats {output.stats:q} > {log:q} 2>&1"


rule dedup_filter:
    input:
        docs=rules.quality.output.docs,
        clusters=rules.dedup_clusters.output.clusters,
    output:
        **shard_outputs("dedup"),
    params:
        cfg=section("dedup"),
        code=stage_code("dedup-filter"),
    log:
        log_path("dedup_filter"),
    benchmark:
        benchmark_path("dedup_filter")
    conda:
        "../envs/llmpipe.yaml"
    threads: 1
    shell:
        "llmpipe dedup-filter --params {params.cfg:q} --input {input.docs:q} --clusters {input.clusters:q}"
        " --output {output.docs:q} --rejects {output.rejects:q} --stats {output.stats:q} > {log:q} 2>&1"


rule split:
    input:
        docs=rules.dedup_filter.output.docs,
    output:
        **{split: layout.split_file(RESULTS, split, "{shard}") for split in SPLITS},
        stats=layout.shard_file(RESULTS, "split", "stats", "{shard}"),
    params:
        cfg=section("split"),
        code=stage_code("split"),
    log:
        log_path("split"),
    benchmark:
        benchmark_path("split")
    conda:
        "../envs/llmpipe.yaml"
    threads: 1
    shell:
        "llmpipe split --params {params.cfg:q} --input {input.docs:q} --train {output.train:q}"
        " --val {output.val:q} --test {output.test:q} --stats {output.stats:q} > {log:q} 2>&1"


# Decontamination: split/train -> decontaminate -> tokenizer / tokenize, and
# posttrain_data/{sft,dpo,rl}_train -> decontaminate -> sft / dpo / rl. One job: the index of
# every evaluation set is built once, and the findings are one table per evaluation set.
DECONTAMINATE_EVAL = {
    **{name: layout.eval_set_file(RESULTS, name) for name in layout.EVAL_SETS},
    "rl_test": layout.posttrain_file(RESULTS, "rl_test"),
    **{Path(path).name.removesuffix(".jsonl"): path for path in config["decontaminate"]["eval_files"]},
}


rule decontaminate:
    input:
        train=[layout.split_file(RESULTS, "train", shard) for shard in SHARDS],
        posttrain=[layout.posttrain_file(RESULTS, name) for name in layout.POSTTRAIN_TRAIN_FILES],
        eval=list(DECONTAMINATE_EVAL.values()),
    output:
        train=[layout.decontaminated_train_file(RESULTS, shard) for shard in SHARDS],
        posttrain=[layout.decontaminated_posttrain_file(RESULTS, name) for name in layout.POSTTRAIN_TRAIN_FILES],
        report=layout.contamination_file(RESULTS),
        stats=layout.decontaminate_stats_file(RESULTS),
    params:
        cfg=section("decontaminate"),
        code=stage_code("decontaminate"),
        eval=[f"{name}={path}" for name, path in DECONTAMINATE_EVAL.items()],
    log:
        log_path("decontaminate", "decontaminate"),
    benchmark:
        benchmark_path("decontaminate", "decontaminate")
    conda:
        "../envs/llmpipe.yaml"
    threads: 1
    shell:
        "llmpipe decontaminate --params {params.cfg:q} --eval {params.eval:q} --train {input.train:q}"
        " --train-output {output.train:q} --posttrain {input.posttrain:q} --posttrain-output {output.posttrain:q}"
        " --report {output.report:q} --stats {output.stats:q} > {log:q} 2>&1"
