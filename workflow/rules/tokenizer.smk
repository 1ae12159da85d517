# The tokenizer half of the DAG: train split -> BPE tokenizer -> token shards -> packed rows.
# One tokenize job per split shard; one pack job per split.

rule tokenizer:
    input:
        train=[layout.decontaminated_train_file(RESULTS, shard) for shard in SHARDS],
        val=[layout.split_file(RESULTS, "val", shard) for shard in SHARDS],
    output:
        tokenizer=layout.tokenizer_file(RESULTS),
        hf=f"{RESULTS}/tokenizer/hf/tokenizer.json",
        hf_config=f"{RESULTS}/tokenizer/hf/tokenizer_config.json",
        hf_special=f"{RESULTS}/tokenizer/hf/special_tokens_map.json",
        stats=report(layout.tokenizer_stats_file(RESULTS), caption="../report/tokenizer_stats.rst", category="Tokenizer"),
    params:
        cfg=section("tokenizer"),
        code=stage_code("tokenizer"),
    log:
        log_path("tokenizer", "tokenizer"),
    benchmark:
        benchmark_path("tokenizer", "tokenizer")
    conda:
        "../envs/llmpipe.yaml"
    threads: 2
    shell:
        "llmpipe tokenizer --params {params.cfg:q} --train {input.train:q} --val {input.val:q}"
        " --output {output.tokenizer:q} --hf {output.hf:q} --stats {output.stats:q}"
        " --threads {threads} > {log:q} 2>&1"


rule tokenize:
    input:
        docs=lambda wc: corpus_file(wc.split, wc.shard),
        tokenizer=rules.tokenizer.output.tokenizer,
    output:
        **{kind: layout.tokens_file(RESULTS, "{split}", "{shard}", kind) for kind in layout.TOKEN_SUFFIXES},
    params:
        code=stage_code("tokenize"),
    log:
        log_path("tokenize", "{split}/{shard}"),
    benchmark:
        benchmark_path("tokenize", "{split}/{shard}")
    conda:
        "../envs/llmpipe.yaml"
    threads: 2
    shell:
        "llmpipe tokenize --tokenizer {input.tokenizer:q} --input {input.docs:q} --output {output.tokens:q}"
        " --offsets {output.offsets:q} --header {output.header:q} --threads {threads} > {log:q} 2>&1"


rule pack:
    input:
        headers=lambda wc: expand(rules.tokenize.output.header, split=wc.split, shard=SHARDS),
        tokens=lambda wc: expand(rules.tokenize.output.tokens, split=wc.split, shard=SHARDS),
    output:
        **packed_outputs("{split}"),
    params:
        cfg=section("pack"),
        code=stage_code("pack"),
    log:
        log_path("pack", "{split}"),
    benchmark:
        benchmark_path("pack", "{split}")
    conda:
        "../envs/llmpipe.yaml"
    threads: 1
    shell:
        "llmpipe pack --params {params.cfg:q} --input {input.headers:q} --tokens {output.tokens:q}"
        " --segments {output.segments:q} --header {output.header:q} > {log:q} 2>&1"
