# The model half of the DAG: packed sequences -> pretrain -> evaluate.
# Checkpoints live in results/pretrain/run/, outside the declared outputs, so a killed job's
# rerun (rerun-incomplete) resumes from the latest one instead of starting over.

rule pretrain:
    input:
        train=packed("train"),
        val=packed("val"),
        tokenizer=f"{RESULTS}/tokenizer/tokenizer.json",
    output:
        model=f"{RESULTS}/pretrain/model.safetensors",
        config=f"{RESULTS}/pretrain/config.json",
        tokenizer=f"{RESULTS}/pretrain/tokenizer.json",
        metrics=report(f"{RESULTS}/pretrain/metrics.jsonl", caption="../report/pretrain_metrics.rst", category="Training"),
        stats=f"{RESULTS}/pretrain/stats.json",
    params:
        cfg=section("pretrain"),
        model=section("model"),
        code=code_version(*MODEL_CODE, "train/pretrain.py", "eval/evaluate.py"),
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


rule evaluate:
    """The same evaluation for every stage's model: results/<stage>/ -> results/evaluate/<stage>.json."""
    input:
        model=[f"{RESULTS}/{{model}}/{name}" for name in MODEL_FILES],
        val=packed("val"),
        test=packed("test"),
    output:
        metrics=report(f"{RESULTS}/evaluate/{{model}}.json", caption="../report/evaluate.rst", category="Evaluation", labels={"model": "{model}"}),
        stats=f"{RESULTS}/evaluate/stats/{{model}}.json",
    wildcard_constraints:
        model=r"pretrain|sft|dpo|rl",
    params:
        cfg=section("evaluate"),
        code=code_version(*MODEL_CODE, "eval/evaluate.py", "eval/generate.py", "eval/chat_eval.py",
                          "posttrain/chat.py", "posttrain/data.py", "posttrain/rewards.py", "data/world.py"),
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
        " --val {params.val:q} --test {params.test:q} --output {output.metrics:q}"
        " --stats {output.stats:q} > {log:q} 2>&1"
