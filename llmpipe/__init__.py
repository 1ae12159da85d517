"""llmpipe: raw web crawls to a trained, aligned language model, one Snakemake DAG.

Each stage is a plain function in a subpackage (data/, tokenizer/, model/, train/, eval/,
report/); ``llmpipe <stage>`` runs it from the shell exactly as the workflow rule does.
"""

__version__ = "0.1.0"
