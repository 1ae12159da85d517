"""``llmpipe export --format gguf``: a model directory as one GGUF file llama.cpp runs.

Written with the ``gguf`` package (llama.cpp's own writer; ``pip install -e .[gguf]``), as
llama.cpp's ``convert_hf_to_gguf.py`` writes an HF Llama (a Qwen3 for a QK-norm model), with
these decisions:

- Architecture ``llama``: context, embedding and feed-forward lengths, block count, head and
  kv-head counts, RoPE base and dimension count (the whole head), RMS norm epsilon.
- Architecture ``qwen3`` (the same keys, under its prefix) for a model with ``model.qk_norm``:
  ``llama`` has no query/key norm; ``qwen3`` is ``llama`` plus exactly ours (RMSNorm of each
  head's query and key before RoPE, with the model's epsilon and gains of head_dim values), as
  the HF export's Qwen3 is.
- RoPE layout. llama.cpp's ``llama`` uses the interleaved rotation (pairs 2i, 2i+1); our model,
  like HF Llama, rotates the half-split pairs (i, i + head_dim/2). As ``convert_hf_to_gguf``'s
  ``LlamaModel.permute`` does, the rows of each head of ``attn_q`` and ``attn_k`` are reordered
  so row 2i is old row i and row 2i+1 old row i + head_dim/2 (k with the kv-head count). The
  dot products q·k, hence the logits, are unchanged. ``qwen3`` rotates the half-split pairs
  (llama.cpp's NEOX rotation), as ours does, so its q and k are written as they are.
- Tensors under llama.cpp's names (``token_embd``, ``blk.N.attn_q/k/v/output``,
  ``ffn_gate/up/down``, ``attn_norm``, ``ffn_norm``, ``output_norm``, ``output``; ``qwen3`` adds
  ``attn_q_norm``, ``attn_k_norm``). A tied head writes no ``output``: llama.cpp then reuses
  ``token_embd`` for the output projection.
- Types: norms stay F32 (as llama.cpp keeps them); matrices are F16, Q8_0 (blocks of 32 along a
  row: a row whose size is not a multiple of 32 stays F16, with a warning) or F32.
- Tokenizer ``gpt2`` (byte-level BPE): tokens in ByteLevel's printable spelling, merges, types
  (normal; control for the special tokens; unused for padding ids when the model's vocabulary
  is larger). Pre-tokenizer ``llama-bpe``: llama.cpp's regex for it is Llama 3's, which is GPT-4's
  cl100k split (``GPT4_PATTERN`` is tiktoken's equivalent rewrite of it) with ASCII-only case
  folding of the contractions; it also sets ``ignore_merges`` (a pre-token that is a whole token
  maps to it), as our BPE does. (``dbrx`` has the same regex without ``ignore_merges``.)
- bos ``<|bos|>`` (``add_bos_token``: a plain prompt starts a document, as ``llmpipe generate``
  does), eos ``<|eos|>`` (a document's end), eot ``<|end|>`` (a turn's end), pad ``<|pad|>``.
  llama.cpp ends generation at any end-of-generation id: eos, eot, and ``<|end|>`` it also
  recognises by name, so chat stops at the turn's end and plain completion at the document's.
- ``tokenizer.chat_template``: the Jinja of ``llmpipe.tokenizer.hf.chat_template`` (it writes
  ``<|bos|>`` itself).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from llmpipe.io import atomic_path
from llmpipe.model.gpt import GPT
from llmpipe.tokenizer import Tokenizer
from llmpipe.tokenizer.hf import bpe_merges, chat_template, hf_token_text

QUANT_BLOCK = 32  # Q8_0 quantizes blocks of 32 values along a row


def rope_interleave(w: np.ndarray, n_heads: int) -> np.ndarray:
    """A q/k projection's rows from the half-split RoPE layout to llama.cpp's interleaved one."""
    out_dim = w.shape[0]
    return w.reshape(n_heads, 2, out_dim // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_architecture(model: GPT) -> str:
    """llama.cpp's architecture for ``model``: ``qwen3`` with QK-norm, else ``llama``."""
    return "qwen3" if model.config.qk_norm else "llama"


LAYER_NAMES = {  # our per-layer weight names -> llama.cpp's (blk.N.*)
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}
QK_NORM_NAMES = {"self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"}  # qwen3 only


def gguf_tensors(model: GPT) -> dict[str, np.ndarray]:
    """The weights as float32 arrays under llama.cpp's names (q and k permuted for ``llama``'s RoPE)."""
    from llmpipe.model.directory import model_state

    c = model.config
    # llama rotates interleaved pairs, so its q/k rows are reordered; qwen3 (NEOX) rotates ours
    permuted = {"attn_q": c.n_head, "attn_k": c.n_kv_head} if gguf_architecture(model) == "llama" else {}
    state = {k: v.float().cpu().numpy() for k, v in model_state(model).items()}
    out = {"token_embd.weight": state.pop("embed_tokens.weight"), "output_norm.weight": state.pop("norm.weight")}
    if "lm_head.weight" in state:
        out["output.weight"] = state.pop("lm_head.weight")
    names = {**LAYER_NAMES, **(QK_NORM_NAMES if c.qk_norm else {})}
    for i in range(c.n_layer):
        for ours, theirs in names.items():
            w = state.pop(f"layers.{i}.{ours}.weight")
            if theirs in permuted:
                w = rope_interleave(w, permuted[theirs])
            out[f"blk.{i}.{theirs}.weight"] = w
    if state:
        raise ValueError(f"GGUF export: weights with no llama.cpp name: {sorted(state)}")
    return out


def vocabulary(tokenizer: Tokenizer, vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """Tokens (ByteLevel spelling; specials as their text), token types and merges, with unused
    padding entries up to the model's ``vocab_size``."""
    import gguf

    if tokenizer.vocab_size > vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} ids, the model only {vocab_size}")
    tokens = [hf_token_text(t) for t in tokenizer.tokens]
    types = [int(gguf.TokenType.NORMAL)] * len(tokens)
    by_id = sorted(tokenizer.special_tokens.items(), key=lambda item: item[1])
    for text, i in by_id:
        if i != len(tokens):
            raise ValueError(f"special token {text} has id {i}, expected {len(tokens)}")
        tokens.append(text)
        types.append(int(gguf.TokenType.CONTROL))
    for i in range(len(tokens), vocab_size):
        tokens.append(f"<|unused{i}|>")
        types.append(int(gguf.TokenType.UNUSED))
    merges = [f"{hf_token_text(tokenizer.tokens[a])} {hf_token_text(tokenizer.tokens[b])}"
              for a, b in bpe_merges(tokenizer)]
    return tokens, types, merges


def write_gguf(model: GPT, tokenizer: Tokenizer, path: str | os.PathLike, quant: str = "f16") -> Path:
    """Write ``model`` (and its tokenizer) as a llama.cpp GGUF file; see the module docstring."""
    try:
        import gguf
    except ImportError:
        raise SystemExit("llmpipe export --format gguf needs the gguf package: pip install -e .[gguf]") from None
    types = {"f16": gguf.GGMLQuantizationType.F16, "q8_0": gguf.GGMLQuantizationType.Q8_0,
             "f32": gguf.GGMLQuantizationType.F32}
    file_types = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                  "f32": gguf.LlamaFileType.ALL_F32}
    if quant not in types:
        raise ValueError(f"quant {quant!r} is not one of {sorted(types)}")
    c = model.config
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, token_types, merges = vocabulary(tokenizer, c.vocab_size)
    special = tokenizer.special_tokens
    with atomic_path(path) as tmp:
        w = gguf.GGUFWriter(str(tmp), gguf_architecture(model))  # the keys' prefix: llama. or qwen3.
        w.add_name("llmpipe")
        w.add_context_length(c.context_length)
        w.add_embedding_length(c.n_embd)
        w.add_block_count(c.n_layer)
        w.add_feed_forward_length(c.mlp_hidden)
        w.add_head_count(c.n_head)
        w.add_head_count_kv(c.n_kv_head)
        w.add_rope_freq_base(float(c.rope_theta))
        w.add_rope_dimension_count(c.head_dim)
        w.add_layer_norm_rms_eps(float(c.norm_eps))
        w.add_vocab_size(c.vocab_size)
        w.add_file_type(file_types[quant])
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("llama-bpe")
        w.add_token_list(tokens)
        w.add_token_types(token_types)
        if merges:
            w.add_token_merges(merges)
        for name, add in (("<|bos|>", w.add_bos_token_id), ("<|eos|>", w.add_eos_token_id),
                          ("<|end|>", w.add_eot_token_id), ("<|pad|>", w.add_pad_token_id)):
            if name in special:
                add(special[name])
        w.add_add_bos_token("<|bos|>" in special)
        w.add_add_eos_token(False)
        template = chat_template(tokenizer)
        if template is not None:
            w.add_chat_template(template)
        for name, array in gguf_tensors(model).items():
            qtype = types[quant] if array.ndim == 2 else gguf.GGMLQuantizationType.F32
            if qtype == gguf.GGMLQuantizationType.Q8_0 and array.shape[-1] % QUANT_BLOCK:
                warnings.warn(f"{name}: rows of {array.shape[-1]} values are not blocks of {QUANT_BLOCK}: "
                              "kept as f16", stacklevel=2)
                qtype = gguf.GGMLQuantizationType.F16
            data = gguf.quants.quantize(np.ascontiguousarray(array, dtype=np.float32), qtype)
            w.add_tensor(name, data, raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path
