"""The language model: a Llama-style decoder-only transformer, readable top to bottom.

Config and presets, RMSNorm, RoPE, attention (SDPA, optional GQA and QK-norm, document mask, KV cache),
SwiGLU MLP, block, model with ``forward(idx, targets=None, segments=None)``, init, optimizer.

The document mask is a dense boolean mask for SDPA on CPU (and in KV-cached decoding), which rules
out SDPA's flash kernel; on CUDA training and scoring use FlexAttention (Dong et al. 2024) with a
block mask built from the segment ids, so fully masked blocks are skipped and a fused kernel runs.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

# Named sizes; vocab_size and context_length come from the data, the rest from here.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(n_layer=4, n_head=4, n_kv_head=4, n_embd=256),  # ~3M + embeddings
    "small": dict(n_layer=8, n_head=8, n_kv_head=8, n_embd=512),  # ~25M + embeddings
    "gpt2": dict(n_layer=12, n_head=12, n_kv_head=12, n_embd=768),  # GPT-2 124M
    "medium": dict(n_layer=24, n_head=16, n_kv_head=16, n_embd=1024),  # GPT-2 medium 350M
}


@dataclass
class GPTConfig:
    vocab_size: int = 4096
    context_length: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int = 4  # < n_head: grouped-query attention (Ainslie et al. 2023)
    n_embd: int = 256
    mlp_hidden: int = 0  # 0: SwiGLU's 8/3 * n_embd rounded up to a multiple of 64
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    init_std: float = 0.02
    qk_norm: bool = False  # RMSNorm on each head's query and key before RoPE (Qwen3; see Attention)

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head or self.n_head % self.n_kv_head:
            raise ValueError(
                f"model: n_embd ({self.n_embd}) must divide by n_head ({self.n_head}) "
                f"and n_head by n_kv_head ({self.n_kv_head})"
            )
        if (self.n_embd // self.n_head) % 2:
            raise ValueError(f"model: head dim {self.n_embd // self.n_head} must be even for RoPE")
        if not self.mlp_hidden:
            # LLaMA (Touvron et al. 2023): 2/3 of 4d keeps SwiGLU's params equal to a 4d GELU MLP
            self.mlp_hidden = 64 * math.ceil(8 * self.n_embd / 3 / 64)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> GPTConfig:
        """A preset's dimensions with ``overrides`` (None values ignored) applied on top."""
        if preset not in PRESETS:
            raise ValueError(f"model.preset {preset!r} is not one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}})

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


class RMSNorm(nn.Module):
    """Root-mean-square norm with a gain (Zhang & Sennrich 2019), computed in fp32 as in Llama."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.rms_norm(x.float(), (x.size(-1),), eps=self.eps)
        return self.weight * y.type_as(x)


def rope_tables(head_dim: int, length: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of RoPE's angles (Su et al. 2021), [length, head_dim], halves duplicated."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate [B, H, T, D] by position; the half-split layout of HF Llama (no weight permutes)."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x * cos + rotated * sin).type_as(x)


def attention_mask(
    query_segments: torch.Tensor, key_segments: torch.Tensor, offset: int
) -> torch.Tensor:
    """Causal mask that also never crosses documents: [B, 1, Tq, Tk] booleans, True = attend.

    Queries sit at absolute positions offset..offset+Tq-1 of the keys. Padding (segment 0)
    attends only to padding, so no row is empty and no NaN leaks into the outputs.
    """
    tq, tk = query_segments.size(1), key_segments.size(1)
    q_pos = torch.arange(offset, offset + tq, device=query_segments.device)
    causal = torch.arange(tk, device=query_segments.device)[None, :] <= q_pos[:, None]
    same_doc = query_segments[:, :, None] == key_segments[:, None, :]
    return (causal[None] & same_doc)[:, None]


def document_block_mask(segments: torch.Tensor):
    """FlexAttention's block mask of ``attention_mask(segments, segments, 0)``: causal, within
    documents, padding (segment 0) attending only to padding — the same rule, evaluated per block."""
    from torch.nn.attention.flex_attention import create_block_mask

    def same_document_causal(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & (segments[b, q_idx] == segments[b, kv_idx])

    B, T = segments.shape
    return create_block_mask(same_document_causal, B, None, T, T, device=segments.device)


def flex_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask, enable_gqa: bool) -> torch.Tensor:
    from torch.nn.attention.flex_attention import flex_attention as flex

    return flex(q, k, v, block_mask=block_mask, enable_gqa=enable_gqa)


class KVCache:
    """Keys, values and segment ids of the positions seen so far, for incremental decoding."""

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int, device, dtype):
        shape = (config.n_layer, batch_size, config.n_kv_head, max_len, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.segments = torch.zeros(batch_size, max_len, dtype=torch.long, device=device)
        self.pos = 0  # positions filled (the same for all layers once a forward completes)

    def add_segments(self, segments: torch.Tensor) -> torch.Tensor:
        """Record the new positions' segment ids; return those of all keys so far."""
        end = self.pos + segments.size(1)
        if end > self.segments.size(1):
            raise ValueError(f"KV cache full: {end} positions > capacity {self.segments.size(1)}")
        self.segments[:, self.pos : end] = segments
        return self.segments[:, :end]

    def take(self, rows: torch.Tensor) -> KVCache:
        """A new cache of batch rows ``rows`` [B'] (this one is left as it is). Only the filled
        positions are copied: the rest is room the next tokens overwrite before anything reads it
        (copying whole buffers was a tenth of RL's sampling time)."""
        new = object.__new__(KVCache)
        new.k, new.v = (buf.new_empty((buf.size(0), len(rows), *buf.shape[2:])) for buf in (self.k, self.v))
        new.k[:, :, :, : self.pos] = self.k[:, rows, :, : self.pos]
        new.v[:, :, :, : self.pos] = self.v[:, rows, :, : self.pos]
        new.segments, new.pos = self.segments[rows], self.pos
        return new

    def select(self, rows: torch.Tensor) -> None:
        """Keep (or repeat) batch rows ``rows`` [B'] in place: drop finished sequences, or copy one
        prompt's prefix to each of its samples."""
        kept = self.take(rows)
        self.k, self.v, self.segments = kept.k, kept.v, kept.segments

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        end = self.pos + k.size(2)
        self.k[layer, :, :, self.pos : end] = k
        self.v[layer, :, :, self.pos : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class Attention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        kv_dim = config.n_kv_head * config.head_dim
        self.q_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.k_proj = nn.Linear(config.n_embd, kv_dim, bias=False)
        self.v_proj = nn.Linear(config.n_embd, kv_dim, bias=False)
        self.o_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        if config.qk_norm:
            # QK-norm (Dehghani et al. 2023; Wortsman et al. 2023): bounds the attention logits so a
            # high learning rate (Muon's) cannot blow them up. Per head, with a gain, before RoPE,
            # as Qwen3 does (nanochat normalises after RoPE without a gain); Qwen3's names, so
            # the Hugging Face export can describe it exactly.
            self.q_norm = RMSNorm(config.head_dim, config.norm_eps)
            self.k_norm = RMSNorm(config.head_dim, config.norm_eps)

    def forward(self, x, cos, sin, mask=None, cache: KVCache | None = None, block_mask=None):
        B, T, C = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
        if block_mask is not None:
            y = flex_attention(q, k, v, block_mask, self.n_kv_head != self.n_head)
            return self.o_proj(y.transpose(1, 2).reshape(B, T, C))
        # Under CPU bf16 autocast the scores stay fp32: bf16 attention left the default model's loss
        # unchanged but cost it most of its held-out arithmetic after SFT (measured: fp32 attention
        # 0.65, bf16 0.29 and 0.12 over two seeds, all-fp32 0.46 and 0.48), and was no faster there.
        cpu_low_precision = q.device.type == "cpu" and q.dtype != torch.float32
        if cpu_low_precision:
            q, k, v = q.float(), k.float(), v.float()
        with torch.autocast("cpu", enabled=False) if cpu_low_precision else contextlib.nullcontext():
            # no mask: plain causal, which lets CUDA pick the flash kernel
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None,
                enable_gqa=self.n_kv_head != self.n_head,
            )
        return self.o_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    """SwiGLU feed-forward (Shazeer 2020): down(silu(gate(x)) * up(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.n_embd, config.mlp_hidden, bias=False)
        self.up_proj = nn.Linear(config.n_embd, config.mlp_hidden, bias=False)
        self.down_proj = nn.Linear(config.mlp_hidden, config.n_embd, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm residual block (GPT-2 / Llama): x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.n_embd, config.norm_eps)
        self.self_attn = Attention(config, layer)
        self.post_attention_layernorm = RMSNorm(config.n_embd, config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, mask=None, cache=None, block_mask=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, block_mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.n_embd)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.norm = RMSNorm(config.n_embd, config.norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:  # Press & Wolf 2017; GPT-2 does the same
            self.lm_head.weight = self.embed_tokens.weight
        cos, sin = rope_tables(config.head_dim, config.context_length, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # GPT-2: scale residual projections by 1/sqrt(2 * n_layer) so the stream stays O(1)
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=config.init_std / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        segments: torch.Tensor | None = None,
        cache: KVCache | None = None,
        reduction: str = "mean",
        flex: bool | None = None,
    ):
        """Logits [B, T, V] and, given targets (-1 = ignore), the cross-entropy loss.

        ``segments`` [B, T] (document ids, 0 = padding) keeps attention within documents;
        ``cache`` continues from the positions it holds and appends these. ``flex`` picks
        FlexAttention for the document mask (default: on CUDA without a cache; torch 2.13 has
        no FlexAttention backward on CPU, so CPU training keeps the dense mask).
        """
        logits = self.lm_head(self.hidden(idx, segments, cache, flex))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(
            logits.float().view(-1, logits.size(-1)), targets.reshape(-1),
            ignore_index=-1, reduction=reduction,
        )
        return logits, loss

    def hidden(
        self,
        idx: torch.Tensor,
        segments: torch.Tensor | None = None,
        cache: KVCache | None = None,
        flex: bool | None = None,
    ) -> torch.Tensor:
        """The final normed hidden states [B, T, C] that ``lm_head`` maps to logits (``forward``'s
        arguments): a caller that needs logits at a few positions projects only those."""
        B, T = idx.shape
        pos = cache.pos if cache is not None else 0
        if pos + T > self.config.context_length:
            raise ValueError(f"sequence of {pos + T} tokens > context_length {self.config.context_length}")
        cos, sin = self.rope_cos[pos : pos + T], self.rope_sin[pos : pos + T]
        mask = block_mask = None
        if cache is not None:
            query_segments = segments if segments is not None else torch.ones_like(idx)
            mask = attention_mask(query_segments, cache.add_segments(query_segments), pos)
        elif segments is not None:
            if flex is None:
                flex = idx.device.type == "cuda"
            if flex:
                block_mask = document_block_mask(segments)
            else:
                mask = attention_mask(segments, segments, 0)
        x = self.embed_tokens(idx)
        for block in self.layers:
            x = block(x, cos, sin, mask, cache, block_mask)
        if cache is not None:
            cache.pos += T
        return self.norm(x)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights are counted once

    def flops_per_token(self) -> float:
        """Training flops per token: 6N for the matmuls + 12·L·H·Q·T for attention (PaLM, app. B).

        N excludes the embedding lookup unless it doubles as the (matmul) output head.
        """
        c = self.config
        n = self.num_params() - (0 if c.tie_embeddings else self.embed_tokens.weight.numel())
        return 6 * n + 12 * c.n_layer * c.n_head * c.head_dim * c.context_length

    def optimizer(
        self, lr: float, weight_decay: float, betas: tuple[float, float], fused: bool = False
    ) -> torch.optim.AdamW:
        """AdamW (Loshchilov & Hutter 2019) with decay on matrices only, not on norm gains."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)
