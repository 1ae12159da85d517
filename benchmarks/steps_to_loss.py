"""Steps to loss: the default tiny model trained with each recipe on the same packed data.

    python benchmarks/steps_to_loss.py --results /tmp/run/results [--config config.yaml]
        [--recipes adamw,muon@300,muon_qk@300] [--eval-every 25] [--out /tmp/steps_to_loss]

``--results`` is a results directory holding a default run's ``pack/`` and ``tokenizer/``
(``snakemake --cores 2 results/pack/train/tokens.bin results/pack/val/tokens.bin``). Every recipe
starts from the config's ``pretrain`` and ``model`` sections — same seed, data order and tokens per
step — and changes only what its name says; ``NAME@STEPS`` sets its ``max_steps`` (the cosine
schedule ends there, so a shorter run decays sooner). It prints validation loss against steps and
training seconds, and the first evaluated step at which each recipe reaches the first recipe's
final validation loss (the target). ``--reference`` takes the target from an existing default run's
``metrics.jsonl`` instead (its wall seconds are then that run's, on whatever load it had).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from llmpipe.config import load_config
from llmpipe.train import pretrain

# name -> (pretrain overrides, model overrides)
RECIPES: dict[str, tuple[dict, dict]] = {
    "adamw": ({}, {}),
    "muon": ({"optimizer": "muon"}, {}),
    "muon_qk": ({"optimizer": "muon"}, {"qk_norm": True}),
    "muon_qk_lr04": ({"optimizer": "muon", "muon_lr": 0.04}, {"qk_norm": True}),
    "muon_qk_lr01": ({"optimizer": "muon", "muon_lr": 0.01}, {"qk_norm": True}),
    "adamw_qk": ({}, {"qk_norm": True}),
    # bf16 autocast (fp32 weights and optimizer state): the same recipe at a CPU's native bf16 speed
    "adamw_bf16": ({"dtype": "bfloat16"}, {}),
    "adamw_fp32": ({"dtype": "float32"}, {}),
    "muon_qk_bf16": ({"optimizer": "muon", "dtype": "bfloat16"}, {"qk_norm": True}),
}


def run_recipe(spec: str, config: dict, results: Path, out: Path, eval_every: int) -> dict:
    name, _, steps = spec.partition("@")
    p_over, m_over = RECIPES[name]
    params = {**config["pretrain"], **p_over, "eval_every": eval_every, "checkpoint_every": 10**9}
    if steps:
        params["max_steps"] = int(steps)
    model_params = {**config["model"], **m_over}
    run_out = out / spec.replace("@", "_")
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
    parser.add_argument("--recipes", default="adamw,muon@300,muon_qk@300",
                        help=f"comma-separated NAME[@STEPS], the first is the target; names: {sorted(RECIPES)}")
    parser.add_argument("--eval-every", type=int, default=25)
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
