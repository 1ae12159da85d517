"""``llmpipe <stage> ...``: run any pipeline stage by hand, exactly as its rule does.

Each stage module defines ``add_arguments(parser)`` and ``run(args)``; modules are
imported only when their stage runs, so ``llmpipe toyweb`` never pays for importing torch.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# stage name -> (module, one-line help); the order is the DAG's.
STAGES: dict[str, tuple[str, str]] = {
    "toyweb": ("llmpipe.data.toyweb", "write the synthetic toy-web crawl as WARC files"),
    "ingest": ("llmpipe.data.ingest", "WARC file -> Parquet of decoded HTML responses"),
    "url-filter": ("llmpipe.data.url_filter", "drop documents by URL (blocklists, words, ...)"),
    "extract": ("llmpipe.data.extract", "HTML -> main text and title"),
    "quality": ("llmpipe.data.quality", "Gopher/C4/FineWeb quality rules, language id, PII"),
    "dedup-signatures": ("llmpipe.data.dedup.signatures", "exact hashes + MinHash signatures of a shard"),
    "dedup-buckets": ("llmpipe.data.dedup.buckets", "LSH band buckets -> candidate duplicate pairs"),
    "dedup-clusters": ("llmpipe.data.dedup.clusters", "union-find clusters, one survivor each"),
    "dedup-filter": ("llmpipe.data.dedup.filter", "drop the non-surviving duplicates of a shard"),
    "split": ("llmpipe.data.split", "train/val/test by stable hash of the document id"),
    "decontaminate": ("llmpipe.data.decontaminate", "drop (or report) training texts that contain evaluation items"),
    "tokenizer": ("llmpipe.tokenizer.train", "train the byte-level BPE tokenizer on the train split"),
    "tokenize": ("llmpipe.tokenizer.tokenize", "one split shard -> token memmap + document offsets"),
    "pack": ("llmpipe.tokenizer.pack", "a split's tokens -> fixed-length rows (concat or best-fit)"),
    "pretrain": ("llmpipe.train.pretrain", "train the decoder on packed sequences (resumable, DDP)"),
    "eval-sets": ("llmpipe.eval.sets", "the evaluation sets (fact probes, chat, few-shot arithmetic) as JSONL"),
    "evaluate": ("llmpipe.eval.evaluate", "losses, bits per byte, fact probes, arithmetic, samples"),
    "posttrain-data": ("llmpipe.posttrain.data", "SFT conversations, preference pairs, RL problems (JSONL)"),
    "sft": ("llmpipe.posttrain.sft", "supervised fine-tuning on chat conversations (assistant-only loss)"),
    "dpo": ("llmpipe.posttrain.dpo", "direct preference optimisation against the frozen SFT model"),
    "rl": ("llmpipe.posttrain.rl", "GRPO-style RL on verifiable rewards (arithmetic word problems)"),
    "report": ("llmpipe.report.html", "one self-contained HTML page about the whole run"),
    "generate": ("llmpipe.model.generate", "continue prompts with a trained model (KV cache)"),
    "chat": ("llmpipe.posttrain.chat_cli", "talk to any stage's model in the chat format (REPL)"),
    "export": ("llmpipe.model.export", "write a Hugging Face Llama directory of a model"),
}


def build_parser(stage: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only ``stage``'s module is imported to add its arguments."""
    parser = argparse.ArgumentParser(prog="llmpipe", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="stage", required=True, metavar="<stage>")
    for name, (module_name, help_text) in STAGES.items():
        stage_parser = sub.add_parser(name, help=help_text, description=help_text)
        stage_parser.set_defaults(_module=module_name)
        if name != stage:
            continue
        stage_parser.add_argument(
            "--params", help="the stage's config section as JSON (what the rule passes)"
        )
        stage_parser.add_argument(
            "--config", help="config.yaml to read the stage's section from (by-hand runs)"
        )
        importlib.import_module(module_name).add_arguments(stage_parser, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    stage = argv[0] if argv and argv[0] in STAGES else None
    args = build_parser(stage).parse_args(argv)
    return int(importlib.import_module(args._module).run(args, args.stage) or 0)


if __name__ == "__main__":
    sys.exit(main())
