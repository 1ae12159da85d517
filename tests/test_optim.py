"""Muon: the Newton–Schulz iteration orthogonalises, one step equals a float64 reference, the
AdamW half equals torch's AdamW, parameters are split as nanochat splits them, and the config
schema rejects bad optimizer settings. (Learning, resume and DDP: tests/test_pretrain.py.)"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from llmpipe.config import ConfigError, validate_config
from llmpipe.model.gpt import GPT, GPTConfig
from llmpipe.train.optim import NS_COEFFICIENTS, Muon, build_optimizer, newton_schulz, set_lr_scale

OPT = {"lr": 1e-2, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "optimizer": "muon", "muon_lr": 0.02,
       "muon_momentum": 0.95, "muon_ns_steps": 5, "muon_weight_decay": 0.01}


@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (48, 48)])
def test_newton_schulz_output_is_near_orthogonal(shape):
    torch.manual_seed(0)
    k = min(shape)
    u, _ = torch.linalg.qr(torch.randn(shape[0], k))
    v, _ = torch.linalg.qr(torch.randn(shape[1], k))
    # singular values over two decades; five steps lift any above ~1e-3 of the Frobenius norm
    g = u @ torch.diag(torch.logspace(-1, 1, k)) @ v.T
    x = newton_schulz(g, steps=5)
    s = torch.linalg.svdvals(x)
    # Jordan's coefficients trade exactness for speed: singular values land near 1, not on it
    assert s.min() > 0.6 and s.max() < 1.25, s
    gram = x.T @ x if shape[0] >= shape[1] else x @ x.T
    assert (gram - torch.eye(k)).abs().max() < 0.6
    # and it keeps g's singular vectors: close to the exact polar factor U V^T
    polar = u @ v.T
    cosine = (x * polar).sum() / (x.norm() * polar.norm())
    assert cosine > 0.97, cosine


def reference_ns(g: np.ndarray, steps: int) -> np.ndarray:
    a, b, c = NS_COEFFICIENTS
    tall = g.shape[0] > g.shape[1]
    x = g.T if tall else g
    x = x / (np.linalg.norm(x) + 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def test_muon_steps_match_a_float64_reference():
    torch.manual_seed(1)
    w0 = torch.randn(6, 4)
    grads = [torch.randn(6, 4) for _ in range(3)]
    p = torch.nn.Parameter(w0.clone())
    lr, mom, wd = 0.05, 0.9, 0.1
    opt = Muon([{"params": [p], "muon": True, "weight_decay": wd}], lr=lr, momentum=mom, ns_steps=5)
    w, buf = w0.double().numpy(), np.zeros((6, 4))
    for g in grads:
        p.grad = g.clone()
        opt.step()
        gn = g.double().numpy()
        buf = mom * buf + (1 - mom) * gn
        ahead = (1 - mom) * gn + mom * buf  # Nesterov
        w = w * (1 - lr * wd) - lr * np.sqrt(6 / 4) * reference_ns(ahead, 5)
    np.testing.assert_allclose(p.detach().double().numpy(), w, rtol=0, atol=1e-5)
    assert torch.equal(opt.state[p]["momentum_buffer"], opt.state_dict()["state"][0]["momentum_buffer"])


def test_muon_adamw_half_equals_torch_adamw():
    torch.manual_seed(2)
    a = torch.nn.Parameter(torch.randn(5, 3))
    b = torch.nn.Parameter(a.detach().clone())
    ours = Muon([{"params": [a], "weight_decay": 0.1}], lr=1e-2, betas=(0.9, 0.95))
    ref = torch.optim.AdamW([b], lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1, eps=1e-8)
    for _ in range(4):
        g = torch.randn(5, 3)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("tie", [True, False])
def test_muon_trains_the_block_matrices_and_adamw_the_rest(tie):
    model = GPT(GPTConfig(vocab_size=64, context_length=16, n_layer=2, n_head=2, n_kv_head=1, n_embd=32,
                          tie_embeddings=tie, qk_norm=True))
    opt = build_optimizer(model, OPT)
    muon, decay, no_decay = opt.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)].split(".")[-2] for p in muon["params"]} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert muon["muon"] and muon["lr"] == 0.02 and muon["weight_decay"] == 0.01
    assert {names[id(p)] for p in decay["params"]} == {"embed_tokens.weight"} | (set() if tie else {"lm_head.weight"})
    assert all(p.dim() == 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    total = sum(len(g["params"]) for g in opt.param_groups)
    assert total == len(list(model.parameters()))  # every parameter once (a tied head is the embedding)
    set_lr_scale(opt, 0.5)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.005, 0.005]


def test_muon_state_dict_round_trips():
    torch.manual_seed(3)
    model = GPT(GPTConfig(vocab_size=64, context_length=16, n_layer=1, n_head=2, n_kv_head=2, n_embd=32))
    opt = build_optimizer(model, OPT)
    x = torch.randint(0, 64, (2, 16))
    for _ in range(2):
        model(x, x)[1].backward()
        opt.step()
        opt.zero_grad()
    twin = copy.deepcopy(model)
    opt2 = build_optimizer(twin, OPT)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # as a checkpoint file would: no shared tensors
    for m, o in ((model, opt), (twin, opt2)):
        m(x, x)[1].backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))


@pytest.mark.parametrize("section", ["pretrain", "sft", "dpo", "rl"])
@pytest.mark.parametrize("key, value", [("optimizer", "sgd"), ("muon_momentum", 1.0), ("muon_ns_steps", 0),
                                        ("muon_lr", 0), ("muon_weight_decay", -0.1)])
def test_schema_rejects_bad_optimizer_settings(section, key, value):
    with pytest.raises(ConfigError, match=key):
        validate_config({section: {key: value}})


def test_schema_fills_optimizer_defaults():
    config = {"pretrain": {}, "model": {}}
    validate_config(config)
    assert config["pretrain"]["optimizer"] in ("adamw", "muon") and config["pretrain"]["muon_ns_steps"] == 5
    assert config["model"]["qk_norm"] in (True, False)
