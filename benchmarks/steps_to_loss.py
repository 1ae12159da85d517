"""Steps to loss: the default tiny model trained with each recipe on the same packed data.

    python benchmarks/steps_to_loss.py --results /tmp/run/results [--config config.yaml]
        [--recipes adamw,default] [--eval-every 50] [--out /tmp/steps_to_loss]

``--results`` is a results directory holding a default run's ``pack/`` and ``tokenizer/``
(``snakemake --cores 2 results/pack/train/tokens.bin results/pack/val/tokens.bin``). Every recipe
starts from the config's ``pretrain`` and ``model`` sections — same seed, data order and tokens per
step — and sets what its name says: ``default`` is the config as it is, ``adamw`` the recipe that
was the default before Muon (AdamW at 3e-3 everywhere, no QK-norm, 500 steps). ``NAME@STEPS`` sets
its ``max_steps`` (the cosine schedule ends there, so a shorter run decays sooner), and each
``+KEY=VALUE`` after it overrides one key of ``pretrain`` or ``model``
(``muon_qk@300+muon_lr=0.03+lr=0.008``: a learning-rate sweep needs no new recipe).

It prints validation loss against steps and training seconds, and the first evaluated step at
which each recipe reaches the first recipe's final validation loss (the target). ``--reference``
takes the target from an existing run's ``pretrain/metrics.jsonl`` instead (its wall seconds are
then that run's, on whatever load it had).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from llmpipe.config import load_config
from llmpipe.train import pretrain

# name -> (pretrain overrides, model overrides); `lr` is AdamW's: every parameter's under adamw,
# the embedding / tied head and the norm gains' under muon (Muon's matrices take `muon_lr`)
ADAMW = {"optimizer": "adamw", "lr": 3e-3, "max_steps": 500}
MUON = {"optimizer": "muon", "lr": 3e-3}
RECIPES: dict[str, tuple[dict, dict]] = {
    "default": ({}, {}),
    "adamw": (ADAMW, {"qk_norm": False}),
    "adamw_qk": (ADAMW, {"qk_norm": True}),
    "muon": (MUON, {"qk_norm": False}),
    "muon_qk": (MUON, {"qk_norm": True}),
    # the precision pinned (dtype auto is bf16 autocast only on CPUs with native bf16 matmuls)
    "adamw_bf16": ({**ADAMW, "dtype": "bfloat16"}, {"qk_norm": False}),
    "adamw_fp32": ({**ADAMW, "dtype": "float32"}, {"qk_norm": False}),
    "muon_qk_bf16": ({**MUON, "dtype": "bfloat16"}, {"qk_norm": True}),
}


def parse_value(text: str):
    """A number or boolean as JSON reads it (YAML 1.1 would read ``1e-4`` as a string), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_spec(spec: str, config: dict) -> tuple[dict, dict]:
    """``NAME[@STEPS][+KEY=VALUE...]`` as (pretrain params, model params) over the config's."""
    head, *overrides = spec.split("+")
    name, _, steps = head.partition("@")
    p_over, m_over = RECIPES[name]
    params, model_params = {**config["pretrain"], **p_over}, {**config["model"], **m_over}
    if steps:
        params["max_steps"] = int(steps)
    for item in overrides:
        key, sep, value = item.partition("=")
        section = params if key in params else model_params if key in model_params else None
        if not sep or section is None:
            raise SystemExit(f"{spec}: {item!r} is not KEY=VALUE with a pretrain or model key")
        section[key] = parse_value(value)
    return params, model_params


def run_recipe(spec: str, config: dict, results: Path, out: Path, eval_every: int) -> dict:
    params, model_params = parse_spec(spec, config)
    params |= {"eval_every": eval_every, "checkpoint_every": 10**9}
    run_out = out / spec.replace("@", "_").replace("+", "_")
    args = argparse.Namespace(
        train=str(results / "pack" / "train"), val=str(results / "pack" / "val"),
        tokenizer=str(results / "tokenizer" / "tokenizer.json"), output=str(run_out), run_dir=str(run_out / "run"),
        metrics=None, stats=None,
    )
    start = time.perf_counter()
    pretrain.train(params, model_params, args)
    wall = time.perf_counter() - start
    return {"recipe": spec, "max_steps": params["max_steps"], "curve": curve_of(run_out / "metrics.jsonl"),
            "wall_s": wall}


def curve_of(metrics: Path) -> list[tuple[int, float, float]]:
    """(step, validation loss, training seconds so far) at each evaluated step of a metrics.jsonl."""
    seconds, curve = 0.0, []
    for line in metrics.read_text().splitlines():
        row = json.loads(line)
        seconds += row["tokens"] / row["step"] / row["tokens_per_s"]  # this step's training time
        if "val_loss" in row:
            curve.append((row["step"], row["val_loss"], seconds))
    return curve


def reference_run(metrics: Path) -> dict:
    """An existing default run's pretrain metrics as the target recipe (a CPU run is bit-reproducible:
    the same data, seed and settings give the same losses, so retraining it only costs time)."""
    curve = curve_of(metrics)
    return {"recipe": "reference", "max_steps": curve[-1][0], "curve": curve, "wall_s": curve[-1][2]}


def first_reaching(curve: list[tuple[int, float, float]], target: float) -> tuple[int, float] | None:
    return next(((step, s) for step, loss, s in curve if loss <= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", required=True, type=Path, help="results directory with pack/ and tokenizer/")
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--recipes", default="adamw,default",
                        help=f"comma-separated NAME[@STEPS][+KEY=VALUE...], the first is the target; "
                             f"names: {sorted(RECIPES)}")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--reference", type=Path,
                        help="a default run's results/pretrain/metrics.jsonl: the target, instead of training it here")
    parser.add_argument("--out", type=Path, default=Path("/tmp/steps_to_loss"))
    args = parser.parse_args()
    config = load_config(args.config)
    runs = [reference_run(args.reference)] if args.reference else []
    for spec in args.recipes.split(","):
        runs.append(run_recipe(spec, config, args.results, args.out, args.eval_every))
        r = runs[-1]
        print(f"{spec}: final val {r['curve'][-1][1]:.4f} at step {r['curve'][-1][0]}, {r['wall_s']:.0f} s wall",
              flush=True)
        (args.out / "runs.json").write_text(json.dumps(runs, indent=1))
    target = runs[0]["curve"][-1][1]
    print(f"\nvalidation loss by step (training seconds in brackets); target = {runs[0]['recipe']}'s final "
          f"{target:.4f}")
    steps = sorted({s for r in runs for s, _, _ in r["curve"]})
    print("| step | " + " | ".join(r["recipe"] for r in runs) + " |")
    print("|---" * (len(runs) + 1) + "|")
    for step in steps:
        cells = []
        for r in runs:
            hit = [(loss, s) for st, loss, s in r["curve"] if st == step]
            cells.append(f"{hit[0][0]:.4f} ({hit[0][1]:.0f} s)" if hit else "")
        print(f"| {step} | " + " | ".join(cells) + " |")
    print("\n| recipe | max_steps | final val | steps to target | train s to target | wall s (whole run) |")
    print("|---|---|---|---|---|---|")
    for r in runs:
        hit = first_reaching(r["curve"], target)
        reach = f"{hit[0]} ({hit[0] / runs[0]['max_steps']:.0%})" if hit else "not reached"
        seconds = f"{hit[1]:.0f}" if hit else "-"
        print(f"| {r['recipe']} | {r['max_steps']} | {r['curve'][-1][1]:.4f} | {reach} | {seconds} | "
              f"{r['wall_s']:.0f} |")

if __name__ == "__main__":
    main()
