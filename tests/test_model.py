"""The model's claims: causal, document mask = separate documents, GQA = repeated heads, sizes."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmpipe.model.gpt import GPT, GPTConfig
from tests.conftest import make_tiny_model


def small_model(**overrides) -> GPT:
    return make_tiny_model(**{"vocab_size": 97, "context_length": 32, "n_layer": 2, "n_head": 4, "n_kv_head": 4,
                              **overrides})


def test_future_tokens_do_not_change_past_logits():
    model = small_model()
    x = torch.randint(0, 97, (2, 32))
    y = x.clone()
    y[:, 20:] = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        a, b = model(x)[0], model(y)[0]
    assert torch.allclose(a[:, :20], b[:, :20], atol=1e-6)
    assert not torch.allclose(a[:, 20:], b[:, 20:])


def test_document_mask_equals_running_each_document_alone():
    model = small_model(n_kv_head=2)
    x = torch.randint(0, 97, (1, 32))
    segments = torch.tensor([[1] * 10 + [2] * 15 + [0] * 7])
    with torch.no_grad():
        packed = model(x, segments=segments)[0]
        first, second = model(x[:, :10])[0], model(x[:, 10:25])[0]
        unmasked = model(x)[0]
    # RoPE is relative, so a document's offset in the row does not matter
    assert torch.allclose(packed[:, :10], first, atol=1e-5)
    assert torch.allclose(packed[:, 10:25], second, atol=1e-5)
    assert not torch.allclose(unmasked[:, 10:25], second, atol=1e-3)
    assert torch.isfinite(packed).all()  # padding rows attend to padding, never to nothing


def test_grouped_query_attention_equals_attention_with_repeated_kv_heads():
    gqa = small_model(n_kv_head=2)
    mha = GPT(GPTConfig(**{**gqa.config.to_dict(), "n_kv_head": 4})).eval()
    state = gqa.state_dict()
    hd = gqa.config.head_dim
    for name, w in list(state.items()):
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            # kv head j serves query heads 2j and 2j+1
            state[name] = w.view(2, hd, -1).repeat_interleave(2, dim=0).reshape(4 * hd, -1)
    mha.load_state_dict(state)
    x = torch.randint(0, 97, (2, 32))
    with torch.no_grad():
        assert torch.allclose(gqa(x)[0], mha(x)[0], atol=1e-5)
    assert gqa.num_params() < mha.num_params()


def test_loss_is_cross_entropy_ignoring_padding_targets():
    model = small_model()
    x = torch.randint(0, 97, (2, 32))
    targets = torch.randint(0, 97, (2, 32))
    targets[:, 25:] = -1
    logits, loss = model(x, targets)
    expected = F.cross_entropy(logits[:, :25].reshape(-1, 97), targets[:, :25].reshape(-1))
    assert torch.allclose(loss, expected, atol=1e-6)
    _, total = model(x, targets, reduction="sum")
    assert torch.allclose(total, expected * 50, rtol=1e-5)


def test_tied_head_is_the_embedding_and_weight_decay_skips_vectors():
    model = small_model()
    assert model.lm_head.weight is model.embed_tokens.weight
    decay, no_decay = model.optimizer(1e-3, 0.1, (0.9, 0.95)).param_groups
    assert decay["weight_decay"] == 0.1 and all(p.dim() == 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.dim() == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize(
    "preset, low, high", [("tiny", 2e6, 6e6), ("small", 20e6, 40e6), ("gpt2", 120e6, 130e6), ("medium", 330e6, 370e6)]
)
def test_presets_have_their_advertised_sizes(preset, low, high):
    vocab = 50304 if preset in ("gpt2", "medium") else 8192
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = GPT(GPTConfig.from_preset(preset, vocab_size=vocab, context_length=1024))
    assert low <= model.num_params() <= high, model.num_params()


def test_flops_per_token_counts_the_head_once():
    tied, untied = small_model(), small_model(tie_embeddings=False)
    c = tied.config
    attention = 12 * c.n_layer * c.n_head * c.head_dim * c.context_length
    assert tied.flops_per_token() == 6 * tied.num_params() + attention
    # untied: the embedding lookup is free, the separate head is a matmul
    assert untied.flops_per_token() == tied.flops_per_token()


def test_bad_dimensions_name_the_problem():
    with pytest.raises(ValueError, match="n_head"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="preset"):
        GPTConfig.from_preset("huge")
    with pytest.raises(ValueError, match="context_length"):
        small_model()(torch.zeros(1, 33, dtype=torch.long))


@pytest.mark.parametrize("n_kv_head", [4, 2])
def test_flex_attention_document_mask_equals_the_dense_mask_forward(n_kv_head):
    """FlexAttention's block mask (what CUDA training uses) gives the dense mask's logits; torch 2.13
    runs its forward eagerly on CPU (no CPU backward: benchmarks/pretrain_gpu.py checks gradients)."""
    model = small_model(n_kv_head=n_kv_head)
    idx = torch.randint(0, 97, (3, 32))
    segments = torch.tensor([[1] * 10 + [2] * 15 + [3] * 5 + [0] * 2, [1] * 32, [1] * 3 + [2] * 4 + [0] * 25])
    with torch.no_grad():
        dense, _ = model(idx, segments=segments, flex=False)
        flex, _ = model(idx, segments=segments, flex=True)
    assert (dense - flex).abs().max() < 1e-5


def test_qk_norm_normalises_each_heads_query_and_key_before_rope():
    model = small_model(qk_norm=True, n_kv_head=2)
    attn = model.layers[0].self_attn
    assert attn.q_norm.weight.shape == attn.k_norm.weight.shape == (model.config.head_dim,)
    x = torch.randint(0, 97, (2, 32))
    with torch.no_grad():
        base = model(x)[0]
        # the norm makes attention blind to each head's query/key scale: scaling q_proj changes nothing
        attn.q_proj.weight.mul_(7.0)
        attn.k_proj.weight.mul_(3.0)
        assert torch.allclose(model(x)[0], base, atol=1e-4)
        # and its gains are live parameters
        attn.q_norm.weight.mul_(3.0)
        assert not torch.allclose(model(x)[0], base, atol=1e-3)
    plain = small_model(n_kv_head=2)
    assert not hasattr(plain.layers[0].self_attn, "q_norm")
    assert len(list(model.parameters())) == len(list(plain.parameters())) + 2 * 2


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_autocast_only_where_the_cpu_multiplies_bf16_natively(monkeypatch, native):
    from llmpipe.model import device

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    cpu = torch.device("cpu")
    assert device.pick_dtype("auto", cpu) == (torch.bfloat16 if native else torch.float32)
    assert device.pick_dtype("float32", cpu) == torch.float32  # an explicit choice is kept
    assert device.pick_dtype("bfloat16", cpu) == torch.bfloat16
    assert device.pick_dtype("auto", torch.device("cuda", 0)) == torch.bfloat16
    assert device.pick_dtype("auto", torch.device("mps")) == torch.float32


def test_bf16_autocast_loss_is_close_to_the_fp32_loss():
    torch.manual_seed(0)
    model = make_tiny_model()
    idx = torch.randint(0, model.config.vocab_size, (2, 16))
    _, loss32 = model(idx, targets=idx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, loss16 = model(idx, targets=idx)
    assert loss16.dtype == torch.float32  # the loss is taken on fp32 logits
    assert float(loss16) != float(loss32) and abs(float(loss16) - float(loss32)) < 0.02 * float(loss32)


def test_attention_scores_stay_fp32_under_cpu_bf16_autocast(monkeypatch):
    import llmpipe.model.gpt as gpt

    seen = []
    sdpa = gpt.F.scaled_dot_product_attention

    def recording(q, k, v, **kwargs):
        seen.append((q.dtype, k.dtype, v.dtype, torch.is_autocast_enabled("cpu")))
        return sdpa(q, k, v, **kwargs)

    monkeypatch.setattr(gpt.F, "scaled_dot_product_attention", recording)
    model = make_tiny_model()
    idx = torch.randint(0, model.config.vocab_size, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(idx, targets=idx)
    model(idx, targets=idx)  # plain fp32
    assert seen == [(torch.float32,) * 3 + (False,), (torch.float32,) * 3 + (False,)]
