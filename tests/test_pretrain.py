"""Pretraining end to end on synthetic packed data: the reader, learning, SIGKILL + resume, DDP."""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from llmpipe.model.directory import load_model
from llmpipe.train import runtime as rt
from llmpipe.train.data import PackedData, PackedDataError, TrainOrder, target_counts
from llmpipe.train.data import unigram_entropy as counts_entropy
from llmpipe.train.loss import mean_loss
from llmpipe.train.schedule import lr_at
from tests.conftest import pretrain_cmd, pretrain_settings, run_pretrain

CONTEXT, VOCAB, BOS, PAD = 32, 128, 1, 0


def write_packed(directory: Path, n_seq: int, seed: int, noise: bool = False) -> None:
    """Packed rows of short "documents" (bos then an arithmetic progression mod the vocab),
    a few rows ending in padding — the exact layout the pack stage writes. ``noise``: the
    documents are uniform random tokens instead, which no model can learn."""
    rng = np.random.default_rng(seed)
    tokens = np.full((n_seq, CONTEXT + 1), PAD, dtype="<u2")
    segments = np.zeros((n_seq, CONTEXT + 1), dtype="<u2")
    for row in range(n_seq):
        pos, seg = 0, 0
        end = CONTEXT + 1 - (int(rng.integers(1, 8)) if row % 4 == 0 else 0)
        while pos < end:
            seg += 1
            length = min(int(rng.integers(4, 16)), end - pos)
            start, stride = int(rng.integers(3, VOCAB)), int(rng.integers(1, 4))
            doc = [BOS] + [3 + (start + i * stride) % (VOCAB - 3) for i in range(length - 1)]
            if noise:
                doc = [BOS] + rng.integers(3, VOCAB, length - 1).tolist()
            tokens[row, pos : pos + length], segments[row, pos : pos + length] = doc, seg
            pos += length
    directory.mkdir(parents=True, exist_ok=True)
    tokens.tofile(directory / "tokens.bin")
    segments.tofile(directory / "segments.bin")
    header = {
        "format": "llmpipe-packed/1", "dtype": "uint16", "n_seq": n_seq, "seq_len": CONTEXT + 1,
        "context_length": CONTEXT, "vocab_size": VOCAB, "bos_id": BOS, "eos_id": 2, "pad_id": PAD,
        "method": "best_fit",
    }
    (directory / "header.json").write_text(json.dumps(header))


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pack")
    write_packed(root / "train", 160, seed=0)
    write_packed(root / "val", 24, seed=1)
    write_packed(root / "noise", 24, seed=2, noise=True)
    (root / "tokenizer.json").write_text("{}")  # copied into the model dir, never parsed here
    return root


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_reader_masks_padding_targets_and_keeps_segments(packed):
    data = PackedData(packed / "train")
    batch = data.batch(np.array([0, 4]))
    assert batch.inputs.shape == batch.targets.shape == batch.segments.shape == (2, CONTEXT)
    raw_tokens, raw_segments = data.tokens[[0, 4]].astype(np.int64), data.segments[[0, 4]]
    assert (batch.inputs.numpy() == raw_tokens[:, :-1]).all()
    padding = raw_segments[:, 1:] == 0
    assert padding.any()  # row 0 ends in padding by construction
    assert (batch.targets.numpy()[padding] == -1).all()
    assert (batch.targets.numpy()[~padding] == raw_tokens[:, 1:][~padding]).all()


def test_reader_errors_name_the_file(packed, tmp_path):
    bad = tmp_path / "train"
    shutil.copytree(packed / "train", bad)
    with open(bad / "tokens.bin", "ab") as fh:
        fh.write(b"\0\0")
    with pytest.raises(PackedDataError, match="tokens.bin"):
        PackedData(bad)
    (bad / "header.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(PackedDataError, match="header.json"):
        PackedData(bad)


def test_train_order_covers_each_epoch_and_resumes_exactly(packed):
    data = PackedData(packed / "train")
    order = TrainOrder(data, 16, seed=3)
    first_epoch = torch.cat([order.next_batch().inputs for _ in range(10)])
    assert len({tuple(r) for r in first_epoch.tolist()}) == len({tuple(r) for r in data.tokens[:, :-1].tolist()})
    resumed = TrainOrder(data, 16, seed=3)
    resumed.load_state_dict(order.state_dict())
    assert torch.equal(order.next_batch().inputs, resumed.next_batch().inputs)
    # two ranks split exactly the rows one process takes
    one, r0, r1 = TrainOrder(data, 8, 3), TrainOrder(data, 4, 3, 0, 2), TrainOrder(data, 4, 3, 1, 2)
    assert torch.equal(one.next_batch().inputs, torch.cat([r0.next_batch().inputs, r1.next_batch().inputs]))


def test_schedule_warms_up_then_decays_to_the_floor():
    p = {"lr": 1.0, "warmup_steps": 10, "max_steps": 110, "min_lr_ratio": 0.1}
    lrs = [lr_at(s, p) for s in range(111)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[60] == pytest.approx(0.55) and lrs[110] == pytest.approx(0.1)


def unigram_entropy(data: PackedData) -> float:
    rows = data.batch(np.arange(len(data)))
    targets = rows.targets[rows.targets >= 0]
    p = torch.bincount(targets, minlength=VOCAB).double() / targets.numel()
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def test_unigram_entropy_counts_the_loss_targets_in_chunks(packed):
    data = PackedData(packed / "train")
    counts = target_counts(data, chunk_rows=7)  # chunks that do not divide the rows
    assert counts.sum() == int((data.batch(np.arange(len(data))).targets >= 0).sum())
    assert counts_entropy(counts) == pytest.approx(unigram_entropy(data), rel=1e-9)
    assert counts_entropy(np.array([5, 5, 0])) == pytest.approx(math.log(2))


@pytest.mark.parametrize("optimizer, qk_norm", [("adamw", False), ("muon", True)])
def test_training_learns_far_below_unigram_entropy_and_writes_a_model_dir(packed, tmp_path, optimizer, qk_norm):
    out = tmp_path / "model"
    cfg = pretrain_settings(max_steps=60, optimizer=optimizer)
    cfg["model"]["qk_norm"] = qk_norm
    run_pretrain(packed, out, cfg)
    rows = metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 61))
    assert {"loss", "lr", "grad_norm", "tokens_per_s"} <= set(rows[0])
    entropy = unigram_entropy(PackedData(packed / "val"))
    assert rows[-1]["val_loss"] < 0.6 * entropy, (rows[-1]["val_loss"], entropy)
    stats = json.loads((out / "stats.json").read_text())["extra"]
    assert stats["steps"] == 60 and stats["tokens"] == 60 * 512
    assert stats["tokens_per_param"] == pytest.approx(stats["tokens"] / stats["params"])
    assert stats["train_val_gap"] == pytest.approx(stats["final_val_loss"] - stats["final_train_eval_loss"])
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in out.iterdir()}


@pytest.mark.parametrize(
    "val, keep, kill_at, optimizer", [("val", "last", 45, "adamw"), ("noise", "best", 65, "adamw"),
                                      ("val", "last", 45, "muon")]
)
def test_sigkill_then_rerun_resumes_to_bit_identical_weights(packed, tmp_path, val, keep, kill_at, optimizer):
    """keep=best on noise validation: the best weights (step 20) are written before the kill
    (after step 65) and must be the ones the resumed run puts in the model directory. Muon:
    its momentum buffers and the AdamW half's moments come back from the checkpoint."""
    cfg = pretrain_settings(max_steps=120, eval_every=60 if keep == "last" else 20, keep=keep, optimizer=optimizer)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    run_pretrain(packed, reference, cfg, val=val)

    cmd = pretrain_cmd(packed, killed, cfg, val=val)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    live = killed / "run" / "metrics.jsonl"
    deadline = time.time() + 600  # generous: the test machine may be busy
    while time.time() < deadline and proc.poll() is None:
        if live.exists() and len(live.read_text().splitlines()) >= kill_at:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.safetensors").exists()
    log = run_pretrain(packed, killed, cfg, val=val)
    resumed_from = int(log.split("resumed from step ")[1].split()[0])
    assert kill_at - 5 <= resumed_from < 120
    a, b = load_file(str(reference / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in metrics(reference)] == [r["loss"] for r in metrics(killed)]
    stats = json.loads((killed / "stats.json").read_text())["extra"]
    assert stats["kept_step"] == (120 if keep == "last" else 20)


@pytest.mark.parametrize("keep", ["auto", "last"])
def test_early_stopping_model_dir_holds_the_kept_weights(packed, tmp_path, keep):
    """Validation on unlearnable noise is best early and worsens as the model grows confident
    on train, so early stopping triggers; auto keeps the best weights, last the last ones."""
    out = tmp_path / "model"
    run_pretrain(
        packed, out, pretrain_settings(max_steps=60, eval_every=5, early_stopping_patience=2, keep=keep), val="noise"
    )
    stats = json.loads((out / "stats.json").read_text())["extra"]
    evals = [r for r in metrics(out) if "val_loss" in r]
    best = min(evals, key=lambda r: r["val_loss"])
    assert stats["stopped_early"] and stats["steps"] == evals[-1]["step"] < 60
    assert stats["best_step"] == best["step"] < stats["steps"]
    kept = best if keep == "auto" else evals[-1]
    assert stats["keep"] == ("best" if keep == "auto" else "last")
    assert stats["kept_step"] == kept["step"] and stats["kept_val_loss"] == kept["val_loss"]
    assert json.loads((out / "config.json").read_text())["step"] == kept["step"]
    # the saved weights really are that step's: they reproduce its validation loss
    model = load_model(out)
    loss = mean_loss(model, PackedData(packed / "noise"), rt.start("cpu"), 8, 24, True)
    assert loss == pytest.approx(kept["val_loss"], rel=1e-6)
    assert stats["val_unigram_entropy"] == pytest.approx(unigram_entropy(PackedData(packed / "noise")))


def test_changed_settings_start_fresh_instead_of_resuming(packed, tmp_path):
    out = tmp_path / "model"
    run_pretrain(packed, out, pretrain_settings(max_steps=10))
    log = run_pretrain(packed, out, pretrain_settings(max_steps=12))
    assert "starting fresh" in log and "resumed" not in log
    assert [r["step"] for r in metrics(out)] == list(range(1, 13))


def test_micro_batch_size_trades_speed_not_results(packed, tmp_path):
    """batch_size splits a step of tokens_per_step into micro-batches of the same rows in the same
    order: halving it (two micro-batches a step) gives the same losses up to float rounding."""
    for name, batch_size in (("whole", 4), ("halves", 2)):
        run_pretrain(packed, tmp_path / name, pretrain_settings(
            max_steps=6, eval_every=6, batch_size=batch_size, tokens_per_step=256, optimizer="muon"))
    whole, halves = metrics(tmp_path / "whole"), metrics(tmp_path / "halves")
    for a, b in zip(whole, halves, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
    assert halves[-1]["val_loss"] == pytest.approx(whole[-1]["val_loss"], rel=1e-4)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_ddp_on_two_gloo_processes_matches_one_process(packed, tmp_path, optimizer):
    """Muon too: DDP averages the gradients before the step, so each rank orthogonalises the
    same momentum and the two ranks stay equal to the one-process run."""
    cfg = pretrain_settings(max_steps=8, eval_every=8, batch_size=4, tokens_per_step=256, optimizer=optimizer)
    run_pretrain(packed, tmp_path / "single", cfg)
    torchrun = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "llmpipe.cli"
    ]
    run_pretrain(packed, tmp_path / "ddp", cfg, launcher=torchrun, env={**os.environ, "OMP_NUM_THREADS": "1"})
    single, ddp = metrics(tmp_path / "single"), metrics(tmp_path / "ddp")
    assert json.loads((tmp_path / "ddp" / "stats.json").read_text())["extra"]["world_size"] == 2
    for s, d in zip(single, ddp, strict=True):
        assert d["loss"] == pytest.approx(s["loss"], rel=1e-4)
    assert ddp[-1]["val_loss"] == pytest.approx(single[-1]["val_loss"], rel=1e-4)
    assert math.isfinite(ddp[-1]["val_loss"])
