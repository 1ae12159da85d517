# llmpipe: raw web crawls -> trained, aligned language model, as one Snakemake DAG.
# The stages live in workflow/rules/*.smk; each rule is a thin call of `llmpipe <stage>`.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/train.smk"


rule all:
    default_target: True
    input:
        all_targets(),
