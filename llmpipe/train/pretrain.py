"""``llmpipe pretrain``: train the decoder on packed sequences; resumable, DDP under torchrun.

AdamW (or Muon for the hidden matrices, ``llmpipe.train.optim``) with warmup + cosine to a floor,
clipping, accumulation to a tokens-per-step target, bf16 + torch.compile on CUDA, fp32 eager (and
bit-reproducible) on CPU; metrics to JSONL.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from llmpipe.config import canonical_json, stage_params
from llmpipe.io import atomic_path
from llmpipe.model.directory import save_model_dir
from llmpipe.model.gpt import GPT, GPTConfig
from llmpipe.stats import StageStats
from llmpipe.train import checkpoint
from llmpipe.train import runtime as rt
from llmpipe.train.data import PackedData, TrainOrder, target_counts, unigram_entropy
from llmpipe.train.loss import mean_loss
from llmpipe.train.optim import build_optimizer, set_lr_scale
from llmpipe.train.schedule import lr_at

CHINCHILLA_TOKENS_PER_PARAM = 20  # Hoffmann et al. 2022


def add_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    parser.add_argument("--model-params", help="the `model` config section as JSON (what the rule passes)")
    parser.add_argument("--train", required=True, help="packed train split directory")
    parser.add_argument("--val", required=True, help="packed validation split directory")
    parser.add_argument("--tokenizer", required=True, help="tokenizer.json to copy into the model directory")
    parser.add_argument("--output", required=True, help="model directory to write")
    parser.add_argument("--run-dir", help="checkpoints + live metrics (default: OUTPUT/run)")
    parser.add_argument("--metrics", help="final metrics.jsonl (default: OUTPUT/metrics.jsonl)")
    parser.add_argument("--stats", required=True, help="stats.json to write")


def model_config(model_params: dict, data: PackedData) -> GPTConfig:
    """The preset's dimensions, explicit overrides, and the vocabulary and context of the data."""
    overrides = {k: v for k, v in model_params.items() if k != "preset"}
    return GPTConfig.from_preset(
        model_params["preset"], vocab_size=data.vocab_size, context_length=data.context_length, **overrides
    )


def accumulation_steps(tokens_per_step: int, batch_size: int, context_length: int, world: int) -> int:
    """Micro-steps per optimizer step so one step sees about ``tokens_per_step`` tokens."""
    return max(1, round(tokens_per_step / (batch_size * context_length * world)))


def kept_weights(params: dict) -> str:
    """Which weights the model directory gets: ``best`` (lowest validation loss seen) or
    ``last``; ``auto`` is best exactly when early stopping is on, since a run stopped for
    not improving has, by construction, last weights worse than its best."""
    if params["keep"] != "auto":
        return params["keep"]
    return "best" if params["early_stopping_patience"] else "last"


def run_fingerprint(params: dict, config: GPTConfig, train: PackedData) -> str:
    """What a checkpoint must match to be resumed: settings, architecture, training data."""
    # the pack header's timing changes on every re-pack of the same data: leave it out
    data = dict(train.header)
    data["stats"] = {k: v for k, v in data.get("stats", {}).items() if k != "wall_seconds"}
    ident = {"params": params, "model": config.to_dict(), "data": data}
    return hashlib.sha256(canonical_json(ident).encode()).hexdigest()[:16]


def read_metrics(path: Path, upto_step: int) -> list[str]:
    """Metric lines up to a checkpoint's step; a line torn by a kill is dropped."""
    if not path.exists():
        return []
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= upto_step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError):
            continue
    return kept


def entropy_summary(train_data: PackedData, val_data: PackedData, val_loss: float | None) -> dict:
    """Each split's unigram entropy (nats/token, the loss of the best context-free model) and
    how far below it the kept model's validation loss lies."""
    train_h, val_h = (unigram_entropy(target_counts(d)) for d in (train_data, val_data))
    out = {"train_unigram_entropy": train_h, "val_unigram_entropy": val_h}
    if val_loss is not None:
        out |= {"val_loss_to_unigram_ratio": val_loss / val_h, "val_unigram_gap": val_h - val_loss}
    return out


def train(params: dict, model_params: dict, args: argparse.Namespace) -> dict:
    runtime = rt.start(params["device"], params["dtype"])
    train_data, val_data = PackedData(args.train), PackedData(args.val)
    if val_data.header["vocab_size"] != train_data.vocab_size:
        raise ValueError(f"{args.val}: vocab_size differs from {args.train}")
    config = model_config(model_params, train_data)
    torch.manual_seed(params["seed"])
    model = GPT(config).to(runtime.device)
    fused = runtime.device.type == "cuda"
    optimizer = build_optimizer(model, params, fused=fused)
    order = TrainOrder(train_data, params["batch_size"], params["seed"], runtime.rank, runtime.world)
    accum = accumulation_steps(params["tokens_per_step"], params["batch_size"], config.context_length, runtime.world)

    output = Path(args.output)
    run_dir = Path(args.run_dir) if args.run_dir else output / "run"
    live_metrics = run_dir / "metrics.jsonl"
    fingerprint = run_fingerprint(params, config, train_data)
    keep = kept_weights(params)
    step, best_val, best_step, bad_evals, history = 0, math.inf, 0, 0, []
    state = checkpoint.load_checkpoint(run_dir, model) if (run_dir / "latest.json").exists() else None
    if state is not None and state["fingerprint"] != fingerprint:
        print(f"checkpoint in {run_dir} is from other settings or data; starting fresh", flush=True)
        torch.manual_seed(params["seed"])  # the load overwrote the seeded init
        model = GPT(config).to(runtime.device)
        optimizer = build_optimizer(model, params, fused=fused)
        state = None
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        order.load_state_dict(state["data"])
        checkpoint.set_rng_state(state["rng"])
        step, best_val, best_step = state["step"], state["best_val"], state["best_step"]
        bad_evals = state["bad_evals"]
        print(f"resumed from step {step} in {run_dir}", flush=True)
    if runtime.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        history = read_metrics(live_metrics, step)
        live_metrics.write_text("".join(line + "\n" for line in history))

    compile_model = params["compile"] if params["compile"] != "auto" else runtime.device.type == "cuda"
    forward = torch.compile(model) if compile_model else model
    if runtime.world > 1:
        forward = DistributedDataParallel(forward, device_ids=[runtime.device.index] if fused else None)

    def validate() -> dict:
        model.eval()
        n = params["eval_sequences"]
        val = mean_loss(model, val_data, runtime, params["batch_size"], n, params["document_mask"])
        trn = mean_loss(model, train_data, runtime, params["batch_size"], n, params["document_mask"])
        model.train()
        return {"val_loss": val, "train_eval_loss": trn, "gap": val - trn}

    tokens_per_step = accum * params["batch_size"] * config.context_length * runtime.world
    flops_per_token, peak = model.flops_per_token(), runtime.peak_flops()
    stopped_early, last_eval = False, {}
    bar = tqdm(
        total=params["max_steps"], initial=step, disable=not runtime.is_main, desc="pretrain", unit="step",
        mininterval=2.0,
    )
    metrics_fh = open(live_metrics, "a") if runtime.is_main else None
    model.train()
    start_time = time.perf_counter()
    while step < params["max_steps"]:
        t0 = time.perf_counter()
        lr = lr_at(step, params)
        set_lr_scale(optimizer, lr / params["lr"])
        batches = [order.next_batch().to(runtime.device) for _ in range(accum)]
        # normalise by the step's valid targets over all ranks and micro-steps: the gradient is
        # the token-mean however the batch is split (padding makes per-micro means unequal)
        (n_valid,) = runtime.all_sum(sum(int((b.targets >= 0).sum()) for b in batches))
        loss_sum = torch.zeros((), device=runtime.device)
        for i, b in enumerate(batches):
            sync = i == accum - 1 or runtime.world == 1
            with (nullcontext() if sync else forward.no_sync()), runtime.autocast():
                segments = b.segments if params["document_mask"] else None
                _, loss = forward(b.inputs, b.targets, segments, reduction="sum")
            (loss * runtime.world / max(n_valid, 1)).backward()
            loss_sum += loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), params["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        (total_loss,) = runtime.all_sum(float(loss_sum))
        step += 1
        dt = time.perf_counter() - t0
        row = {
            "step": step, "loss": total_loss / max(n_valid, 1), "lr": lr, "grad_norm": float(grad_norm),
            "tokens": step * tokens_per_step, "tokens_per_s": tokens_per_step / dt, "epoch": order.epoch,
        }
        if peak:
            row["mfu"] = flops_per_token * tokens_per_step / dt / (peak * runtime.world)
        if step % params["eval_every"] == 0 or step == params["max_steps"]:
            last_eval = validate()
            row.update(last_eval)
            if last_eval["val_loss"] < best_val:
                best_val, best_step, bad_evals = last_eval["val_loss"], step, 0
                if keep == "best" and runtime.is_main:
                    checkpoint.save_best(run_dir, model, step, fingerprint)
            else:
                bad_evals += 1
            patience = params["early_stopping_patience"]
            stopped_early = bool(patience) and bad_evals >= patience
        if metrics_fh:
            metrics_fh.write(json.dumps(row) + "\n")
            metrics_fh.flush()
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{lr:.2e}")
        done = stopped_early or step == params["max_steps"]
        if runtime.is_main and (step % params["checkpoint_every"] == 0 or done):
            state = {
                "step": step, "fingerprint": fingerprint, "optimizer": optimizer.state_dict(),
                "scheduler": {"step": step, "max_steps": params["max_steps"]},
                "data": order.state_dict(), "rng": checkpoint.rng_state(),
                "best_val": best_val, "best_step": best_step, "bad_evals": bad_evals,
            }
            checkpoint.save_checkpoint(run_dir, step, model, state)
        if stopped_early:
            break
    bar.close()
    train_seconds = time.perf_counter() - start_time
    if metrics_fh:
        metrics_fh.close()
    summary = {}
    if runtime.is_main:
        # best_step is 0 only when no validation was ever finite: then the last is all there is
        kept_step = best_step if keep == "best" and best_step else step
        if kept_step != step:
            checkpoint.load_best(run_dir, model, kept_step, fingerprint)
        kept_val = best_val if kept_step == best_step else last_eval.get("val_loss")
        save_model_dir(output, model, args.tokenizer, meta={
            "step": kept_step,
            "data": {k: train_data.header.get(k) for k in ("bos_id", "eos_id", "pad_id", "vocab_size", "method")},
            "document_mask": params["document_mask"],
        })
        with atomic_path(args.metrics or output / "metrics.jsonl") as tmp:
            tmp.write_text(live_metrics.read_text())
        tokens = step * tokens_per_step
        summary = {
            "steps": step, "params": model.num_params(), "tokens": tokens,
            "tokens_per_param": tokens / model.num_params(),
            "chinchilla_tokens_per_param": CHINCHILLA_TOKENS_PER_PARAM,
            "epochs": order.epoch, "final_val_loss": last_eval.get("val_loss"),
            "final_train_eval_loss": last_eval.get("train_eval_loss"), "train_val_gap": last_eval.get("gap"),
            "best_val_loss": best_val if best_val < math.inf else None, "best_step": best_step,
            "stopped_early": stopped_early, "keep": keep, "kept_step": kept_step,
            "kept_val_loss": kept_val, **entropy_summary(train_data, val_data, kept_val),
            "accumulation_steps": accum, "tokens_per_step": tokens_per_step, "world_size": runtime.world,
            "device": str(runtime.device), "dtype": str(runtime.dtype).removeprefix("torch."),
            "compiled": bool(compile_model), "seconds_this_run": train_seconds,
            "model": config.to_dict(),
        }
    rt.stop(runtime)
    return summary


def run(args: argparse.Namespace, stage: str) -> int:
    params = stage_params(args.params, args.config, "pretrain")
    model_params = stage_params(args.model_params, args.config, "model")
    stats = StageStats("pretrain")
    summary = train(params, model_params, args)
    if summary:
        stats.extra.update(summary)
        stats.write(args.stats)
    return 0
