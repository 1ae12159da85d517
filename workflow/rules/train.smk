# The model half of the DAG: packed sequences -> pretrain -> evaluate.
# Checkpoints live in results/pretrain/run/, outside the declared outputs, so a killed job's
# rerun (rerun-incomplete) resumes from the latest one instead of starting over.

rule pretrain:
    input:
        train=packed("train"),
        val=packed("val"),
        tokenizer=layout.tokenizer_file(RESULTS),
    output:
        **model_outputs("pretrain"),
        metrics=report(layout.metrics_file(RESULTS, "pretrain"), caption="../report/pretrain_metrics.rst", category="Training"),
        stats=layout.training_stats_file(RESULTS, "pretrain"),
    params:
        cfg=section("pretrain"),
        model=section("model"),
        code=stage_code("pretrain"),
        launcher=pretrain_launcher(),
        train=lambda wc, input: Path(input.train[0]).parent,
        val=lambda wc, input: Path(input.val[0]).parent,
        out=lambda wc, output: Path(output.model).parent,
    log:
        log_path("pretrain", "pretrain"),
    benchmark:
        benchmark_path("pretrain", "pretrain")
    conda:
        "../envs/llmpipe.yaml"
    threads: workflow.cores
    resources:
        gpu=config["pretrain"]["gpus"],
    shell:
        "OMP_NUM_THREADS={threads} {params.launcher} pretrain --params {params.cfg:q}"
        " --model-params {params.model:q} --train {params.train:q} --val {params.val:q}"
        " --tokenizer {input.tokenizer:q} --output {params.out:q} --metrics {output.metrics:q}"
        " --stats {output.stats:q} > {log:q} 2>&1"


rule eval_sets:
    """The evaluation sets as files (fact probes, chat questions and in-distribution problems,
    few-shot arithmetic), each item marked with its side of the world's held-out share: inputs of
    evaluate and decontaminate, so both see exactly the same items."""
    output:
        **{name: layout.eval_set_file(RESULTS, name) for name in layout.EVAL_SETS},
        stats=layout.eval_sets_stats_file(RESULTS),
    params:
        cfg=section("evaluate", EVAL_SET_KEYS),
        world=section("world"),
        code=stage_code("eval-sets"),
    log:
        log_path("eval_sets", "eval_sets"),
    benchmark:
        benchmark_path("eval_sets", "eval_sets")
    conda:
        "../envs/llmpipe.yaml"
    threads: 1
    shell:
        "llmpipe eval-sets --params {params.cfg:q} --world {params.world:q} --fact-probes {output.fact_probes:q}"
        " --chat {output.chat:q} --chat-arithmetic {output.chat_arithmetic:q}"
        " --arithmetic-fewshot {output.arithmetic_fewshot:q} --stats {output.stats:q} > {log:q} 2>&1"


rule evaluate:
    """The same evaluation for every stage's model: results/<stage>/ -> results/evaluate/<stage>.json."""
    input:
        model=layout.model_files(RESULTS, "{model}"),
        val=packed("val"),
        test=packed("test"),
        **{name: layout.eval_set_file(RESULTS, name) for name in layout.EVAL_SETS},
        rl_test=layout.posttrain_file(RESULTS, "rl_test"),
        # memorisation: an index of the train tokens the models saw, prefixes of held-out documents
        train_tokens=[layout.tokens_file(RESULTS, "train", shard, "header") for shard in SHARDS],
        val_tokens=[layout.tokens_file(RESULTS, "val", shard, "header") for shard in SHARDS],
    output:
        metrics=report(layout.evaluation_file(RESULTS, "{model}"), caption="../report/evaluate.rst", category="Evaluation", labels={"model": "{model}"}),
        stats=f"{RESULTS}/evaluate/stats/{{model}}.json",
    wildcard_constraints:
        model="|".join(MODEL_STAGES),
    params:
        cfg=section("evaluate"),
        code=stage_code("evaluate"),
        model=lambda wc, input: Path(input.model[0]).parent,
        val=lambda wc, input: Path(input.val[0]).parent,
        test=lambda wc, input: Path(input.test[0]).parent,
    log:
        log_path("evaluate", "{model}"),
    benchmark:
        benchmark_path("evaluate", "{model}")
    conda:
        "../envs/llmpipe.yaml"
    threads: workflow.cores
    shell:
        "OMP_NUM_THREADS={threads} llmpipe evaluate --params {params.cfg:q} --model {params.model:q}"
        " --val {params.val:q} --test {params.test:q} --fact-probes {input.fact_probes:q} --chat {input.chat:q}"
        " --chat-arithmetic {input.chat_arithmetic:q} --arithmetic {input.arithmetic_fewshot:q}"
        " --rl-test {input.rl_test:q} --train-tokens {input.train_tokens:q} --val-tokens {input.val_tokens:q}"
        " --output {output.metrics:q} --stats {output.stats:q} > {log:q} 2>&1"
