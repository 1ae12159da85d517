# Post-training: generated (or user) data -> sft (-> dpo -> rl), each a model directory in the
# pretrain format, so the `evaluate` rule scores every stage the same way.

POSTTRAIN_DATA = [
    f"{RESULTS}/posttrain_data/{name}.jsonl"
    for name in ["sft_train", "sft_heldout", "dpo_train", "dpo_heldout", "rl_train", "rl_test"]
]


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
        stats=f"{RESULTS}/posttrain_data/stats.json",
    params:
        cfg=section("posttrain_data"),
        code=code_version("posttrain/data.py", "posttrain/chat.py", "data/world.py"),
        out=lambda wc, output: Path(output.stats).parent,
    log:
        log_path("posttrain_data", "posttrain_data"),
    benchmark:
        benchmark_path("posttrain_data", "posttrain_data")
    conda:
        "../envs/llmpipe.yaml"
    threads: 1
    shell:
        "llmpipe posttrain-data --params {params.cfg:q} --output {params.out:q}"
        " --stats {output.stats:q} > {log:q} 2>&1"


rule sft:
    input:
        base=[f"{RESULTS}/pretrain/{name}" for name in MODEL_FILES],
        train=f"{RESULTS}/posttrain_data/sft_train.jsonl",
        heldout=f"{RESULTS}/posttrain_data/sft_heldout.jsonl",
    output:
        model=f"{RESULTS}/sft/model.safetensors",
        config=f"{RESULTS}/sft/config.json",
        tokenizer=f"{RESULTS}/sft/tokenizer.json",
        metrics=f"{RESULTS}/sft/metrics.jsonl",
        stats=f"{RESULTS}/sft/stats.json",
    params:
        cfg=section("sft"),
        code=code_version(*MODEL_CODE, "posttrain/sft.py", "posttrain/chat.py", "posttrain/data.py",
                          "eval/chat_eval.py", "eval/generate.py", "train/pretrain.py"),
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
        "OMP_NUM_THREADS={threads} llmpipe sft --params {params.cfg:q} --base {params.base:q}"
        " --train {input.train:q} --heldout {input.heldout:q} --output {params.out:q}"
        " --metrics {output.metrics:q} --stats {output.stats:q} > {log:q} 2>&1"


# Preference optimisation, then RL: results/sft -> dpo -> rl. The code both read (besides their own module).
ALIGN_CODE = [*MODEL_CODE, "posttrain/chat.py", "posttrain/data.py", "posttrain/logprobs.py",
              "posttrain/rewards.py", "posttrain/sft.py", "eval/chat_eval.py", "eval/generate.py", "train/pretrain.py"]


rule dpo:
    """DPO of the SFT model against itself frozen (reference log-probs computed once)."""
    input:
        model=[f"{RESULTS}/sft/{name}" for name in MODEL_FILES],
        train=f"{RESULTS}/posttrain_data/dpo_train.jsonl",
        heldout=f"{RESULTS}/posttrain_data/dpo_heldout.jsonl",
    output:
        model=f"{RESULTS}/dpo/model.safetensors",
        config=f"{RESULTS}/dpo/config.json",
        tokenizer=f"{RESULTS}/dpo/tokenizer.json",
        metrics=f"{RESULTS}/dpo/metrics.jsonl",
        stats=f"{RESULTS}/dpo/stats.json",
    params:
        cfg=section("dpo"),
        code=code_version(*ALIGN_CODE, "posttrain/dpo.py"),
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
        "OMP_NUM_THREADS={threads} llmpipe dpo --params {params.cfg:q} --base {params.base:q}"
        " --train {input.train:q} --heldout {input.heldout:q} --output {params.out:q}"
        " --metrics {output.metrics:q} --stats {output.stats:q} > {log:q} 2>&1"


rule rl:
    """GRPO-style RL of the DPO model on arithmetic problems with a verifiable reward."""
    input:
        model=[f"{RESULTS}/dpo/{name}" for name in MODEL_FILES],
        train=f"{RESULTS}/posttrain_data/rl_train.jsonl",
        test=f"{RESULTS}/posttrain_data/rl_test.jsonl",
    output:
        model=f"{RESULTS}/rl/model.safetensors",
        config=f"{RESULTS}/rl/config.json",
        tokenizer=f"{RESULTS}/rl/tokenizer.json",
        metrics=f"{RESULTS}/rl/metrics.jsonl",
        stats=f"{RESULTS}/rl/stats.json",
    params:
        cfg=section("rl"),
        code=code_version(*ALIGN_CODE, "posttrain/rl.py"),
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
