# The tokenizer half of the DAG: train split -> BPE tokenizer -> token shards -> packed rows.
# One tokenize job per split shard; one pack job per split.

TOKENIZER_CODE = ["tokenizer/bpe.py", "tokenizer/arrow.py", "_bpe"]


rule tokenizer:
    input:
        train=expand(f"{RESULTS}/split/train/{{shard}}.parquet", shard=SHARDS),
        val=expand(f"{RESULTS}/split/val/{{shard}}.parquet", shard=SHARDS),
    output:
        tokenizer=f"{RESULTS}/tokenizer/tokenizer.json",
        hf=f"{RESULTS}/tokenizer/hf/tokenizer.json",
        hf_config=f"{RESULTS}/tokenizer/hf/tokenizer_config.json",
        hf_special=f"{RESULTS}/tokenizer/hf/special_tokens_map.json",
        stats=report(f"{RESULTS}/tokenizer/stats.json", caption="../report/tokenizer_stats.rst", category="Tokenizer"),
    params:
        cfg=section("tokenizer"),
        code=code_version("tokenizer/train.py", "tokenizer/hf.py", *TOKENIZER_CODE),
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
        docs=f"{RESULTS}/split/{{split}}/{{shard}}.parquet",
        tokenizer=rules.tokenizer.output.tokenizer,
    output:
        tokens=f"{RESULTS}/tokens/{{split}}/{{shard}}.bin",
        offsets=f"{RESULTS}/tokens/{{split}}/{{shard}}.idx.npy",
        header=f"{RESULTS}/tokens/{{split}}/{{shard}}.json",
    params:
        code=code_version("tokenizer/tokenize.py", *TOKENIZER_CODE),
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
        tokens=f"{RESULTS}/pack/{{split}}/tokens.bin",
        segments=f"{RESULTS}/pack/{{split}}/segments.bin",
        header=f"{RESULTS}/pack/{{split}}/header.json",
    params:
        cfg=section("pack"),
        code=code_version("tokenizer/pack.py"),
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
