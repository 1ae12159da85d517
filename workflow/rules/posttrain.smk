# Post-training: generated (or user) data -> sft (-> dpo -> rl), each a model directory in the
# pretrain format, so the `evaluate` rule scores every stage the same way.

POSTTRAIN_DATA = [layout.posttrain_file(RESULTS, name) for name in layout.POSTTRAIN_FILES]


rule posttrain_data:
    input:
        # the user's own data files (none by default): editing one reruns the rule
        user=lambda wc: [
            config["posttrain_data"][key]
            for key in ("sft_path", "dpo_path", "rl_path")
            if config["posttrain_data"][key]
        ],
    output:
        files=POSTTRAIN_DATA,
        stats=f"{layout.posttrain_dir(RESULTS)}/stats.json",
    params:
        cfg=section("posttrain_data"),
        world=section("world"),
        code=stage_code("posttrain-data"),
        out=lambda wc, output: Path(output.stats).parent,
    log:
        log_path("posttrain_data", "posttrain_data"),
    benchmark:
        benchmark_path("posttrain_data", "posttrain_data")
    conda:
        "../envs/llmpipe.yaml"
    threads: 1
    shell:
        "llmpipe posttrain-data --params {params.cfg:q} --world {params.world:q} --output {params.out:q}"
        " --stats {output.stats:q} > {log:q} 2>&1"


rule sft:
    input:
        base=layout.model_files(RESULTS, "pretrain"),
        train=layout.decontaminated_posttrain_file(RESULTS, "sft_train"),
        heldout=layout.posttrain_file(RESULTS, "sft_heldout"),
    output:
        **model_outputs("sft"),
        metrics=layout.metrics_file(RESULTS, "sft"),
        stats=layout.training_stats_file(RESULTS, "sft"),
    params:
        cfg=section("sft"),
        world=section("world"),
        code=stage_code("sft"),
        base=lambda wc, input: Path(input.base[0]).parent,
        out=lambda wc, output: Path(output.model).parent,
    log:
        log_path("sft", "sft"),
    benchmark:
        benchmark_path("sft", "sft")
    conda:
        "../envs/llmpipe.yaml"
    threads: workflow.cores
    resources:
        gpu=config["sft"]["gpus"],
    shell:
        "OMP_NUM_THREADS={threads} llmpipe sft --params {params.cfg:q} --world {params.world:q} --base {params.base:q}"
        " --train {input.train:q} --heldout {input.heldout:q} --output {params.out:q}"
        " --metrics {output.metrics:q} --stats {output.stats:q} > {log:q} 2>&1"


# Preference optimisation, then RL: results/sft -> dpo -> rl.


rule dpo:
    """DPO of the SFT model against itself frozen (reference log-probs computed once)."""
    input:
        model=layout.model_files(RESULTS, "sft"),
        train=layout.decontaminated_posttrain_file(RESULTS, "dpo_train"),
        heldout=layout.posttrain_file(RESULTS, "dpo_heldout"),
    output:
        **model_outputs("dpo"),
        metrics=layout.metrics_file(RESULTS, "dpo"),
        stats=layout.training_stats_file(RESULTS, "dpo"),
    params:
        cfg=section("dpo"),
        world=section("world"),
        code=stage_code("dpo"),
        base=lambda wc, input: Path(input.model[0]).parent,
        out=lambda wc, output: Path(output.model).parent,
    log:
        log_path("dpo", "dpo"),
    benchmark:
        benchmark_path("dpo", "dpo")
    conda:
        "../envs/llmpipe.yaml"
    threads: workflow.cores
    resources:
        gpu=config["dpo"]["gpus"],
    shell:
        "OMP_NUM_THREADS={threads} llmpipe dpo --params {params.cfg:q} --world {params.world:q} --base {params.base:q}"
        " --train {input.train:q} --heldout {input.heldout:q} --output {params.out:q}"
        " --metrics {output.metrics:q} --stats {output.stats:q} > {log:q} 2>&1"


rule rl:
    """GRPO-style RL of the DPO model on arithmetic problems with a verifiable reward."""
    input:
        model=layout.model_files(RESULTS, "dpo"),
        train=layout.decontaminated_posttrain_file(RESULTS, "rl_train"),
        test=layout.posttrain_file(RESULTS, "rl_test"),
    output:
        **model_outputs("rl"),
        metrics=layout.metrics_file(RESULTS, "rl"),
        stats=layout.training_stats_file(RESULTS, "rl"),
    params:
        cfg=section("rl"),
        code=stage_code("rl"),
        base=lambda wc, input: Path(input.model[0]).parent,
        out=lambda wc, output: Path(output.model).parent,
    log:
        log_path("rl", "rl"),
    benchmark:
        benchmark_path("rl", "rl")
    conda:
        "../envs/llmpipe.yaml"
    threads: workflow.cores
    resources:
        gpu=config["rl"]["gpus"],
    shell:
        "OMP_NUM_THREADS={threads} llmpipe rl --params {params.cfg:q} --base {params.base:q}"
        " --train {input.train:q} --test {input.test:q} --output {params.out:q}"
        " --metrics {output.metrics:q} --stats {output.stats:q} > {log:q} 2>&1"
