# The data half of the DAG: toy web -> ingest -> URL filter -> extract -> quality -> dedup -> split.
# One job per shard (WARC file) everywhere except the dedup clustering, which sees all shards.


rule toyweb:
    output:
        warcs=[f"{RESULTS}/toyweb/{shard}.warc.gz" for shard in SHARDS]
        if config["input"]["source"] == "toyweb"
        else [],
        truth=f"{RESULTS}/toyweb/truth.parquet",
        stats=f"{RESULTS}/toyweb/stats.json",
    params:
        cfg=section("toyweb"),
        code=code_version("data/toyweb.py", "data/world.py"),
    log:
        log_path("toyweb", "toyweb"),
    benchmark:
        benchmark_path("toyweb", "toyweb")
    conda:
        "../envs/llmpipe.yaml"
    threads: 1
    shell:
        "llmpipe toyweb --params {params.cfg:q} --warc {output.warcs:q}"
        " --truth {output.truth:q} --stats {output.stats:q} > {log:q} 2>&1"


rule ingest:
    input:
        warc=lambda wc: WARCS[wc.shard],
    output:
        docs=f"{RESULTS}/ingest/docs/{{shard}}.parquet",
        stats=f"{RESULTS}/ingest/stats/{{shard}}.json",
    params:
        cfg=section("ingest"),
        code=code_version("data/ingest.py"),
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
        docs=f"{RESULTS}/url_filter/docs/{{shard}}.parquet",
        rejects=f"{RESULTS}/url_filter/rejects/{{shard}}.parquet",
        stats=f"{RESULTS}/url_filter/stats/{{shard}}.json",
    params:
        cfg=section("url_filter"),
        code=code_version("data/url_filter.py", "data/blocklists/*.txt"),
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
        docs=f"{RESULTS}/extract/docs/{{shard}}.parquet",
        rejects=f"{RESULTS}/extract/rejects/{{shard}}.parquet",
        stats=f"{RESULTS}/extract/stats/{{shard}}.json",
    params:
        cfg=section("extract"),
        code=code_version("data/extract.py"),
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
        docs=f"{RESULTS}/quality/docs/{{shard}}.parquet",
        rejects=f"{RESULTS}/quality/rejects/{{shard}}.parquet",
        stats=f"{RESULTS}/quality/stats/{{shard}}.json",
    params:
        cfg=section("quality"),
        code=code_version("data/quality.py"),
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
        code=code_version("data/dedup.py", "_minhash"),
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
        code=code_version("data/dedup.py"),
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
        clusters=f"{RESULTS}/dedup/clusters.parquet",
        stats=report(f"{RESULTS}/dedup/clusters.stats.json", caption="../report/dedup_clusters.rst", category="Data"),
    params:
        cfg=section("dedup"),
        code=code_version("data/dedup.py"),
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
        docs=f"{RESULTS}/dedup/docs/{{shard}}.parquet",
        rejects=f"{RESULTS}/dedup/rejects/{{shard}}.parquet",
        stats=f"{RESULTS}/dedup/stats/{{shard}}.json",
    params:
        cfg=section("dedup"),
        code=code_version("data/dedup.py"),
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
        train=f"{RESULTS}/split/train/{{shard}}.parquet",
        val=f"{RESULTS}/split/val/{{shard}}.parquet",
        test=f"{RESULTS}/split/test/{{shard}}.parquet",
        stats=f"{RESULTS}/split/stats/{{shard}}.json",
    params:
        cfg=section("split"),
        code=code_version("data/split.py"),
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
