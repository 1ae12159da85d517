# llmpipe: raw web crawls -> trained, aligned language model, as one Snakemake DAG.
# The stages live in workflow/rules/*.smk; each rule is a thin call of `llmpipe <stage>`.
from snakemake.utils import min_version, validate

from llmpipe.config import SCHEMA_FILE, validate_config

min_version("9.0")


configfile: "config.yaml"


# The schemas ship in the llmpipe package (llmpipe/schemas), so this validates against the
# installed package's own copy, the one its stages validate with too.
validate(config, str(SCHEMA_FILE))
# Snakemake fills no defaults inside $ref'd section schemas; llmpipe's loader does.
validate_config(config)


wildcard_constraints:
    shard=r"[A-Za-z0-9_-]+",
    band=r"\d+",
    split=r"train|val|test",


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/posttrain.smk"
include: "workflow/rules/report.smk"


# Aggregation, not computation: on a cluster these run on the submit host instead of
# waiting in the queue for a node.
localrules:
    all,
    report,


rule all:
    default_target: True
    input:
        all_targets(),
