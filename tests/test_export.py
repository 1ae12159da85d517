"""The exports are what they claim: the HF Llama directory gives our logits (fp32, <= 1e-4), its
tokenizer our chat prompts and its ``generate`` our replies, stopping at <|end|>; the GGUF file
gives, in llama.cpp itself, our tokens, greedy replies and (f16) logits within f16 rounding."""
from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from llmpipe.model.directory import load_model, load_tokenizer, save_model_dir
from llmpipe.model.generate import Sampling, generate
from llmpipe.model.gpt import GPT, GPTConfig
from llmpipe.tokenizer import Tokenizer
from llmpipe.tokenizer.chat import END, prompt_ids, render
from tests.conftest import make_tiny_model

transformers = pytest.importorskip("transformers")  # in the test extras: pip install -e .[test]

CONVERSATIONS = [
    ([{"role": "user", "content": "Hi"}], "Hello there, how are you?"),
    ([{"role": "user", "content": "What is the capital of France?"}], "The capital of France is Paris."),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}], "Blue."),
    ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there, how are you?"},
      {"role": "user", "content": "Fine, thanks. And you?"}], "I am well, thank you!"),
]
# Special tokens' text inside content, next to spaces and punctuation (the corpus teaches " <|" and "|>")
SPECIAL_TEXT = ["<|user|> is a token", "x <|user|> y", "say <|end|>!", "<|bos|><|assistant|>", "a|> <|b"]
CORPUS = " ".join(reply + " " + m[-1]["content"] for m, reply in CONVERSATIONS) + " x <|y|> !<|z|> " * 20


def run_export(model_dir: Path, output: Path, *extra: str) -> str:
    """``llmpipe export`` as a user runs it."""
    proc = subprocess.run(
        [sys.executable, "-m", "llmpipe.cli", "export", "--model", str(model_dir), "--output", str(output), *extra],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def trained_looking_model(**overrides) -> GPT:
    """A small model with every weight, norm gains included, away from its init values."""
    model = make_tiny_model(**{"vocab_size": 301, "context_length": 48, "n_layer": 2, "n_head": 4, "n_kv_head": 4,
                               "n_embd": 64, "rope_theta": 500.0, **overrides})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.fixture(scope="module")
def chat_tokenizer() -> Tokenizer:
    """A BPE with merges (the byte tokenizer has none), among them " <|" and "|>"."""
    return Tokenizer.train([CORPUS], vocab_size=256 + 70 + 7)


def chat_model(tokenizer: Tokenizer, seed: int = 0, steps: int = 300, **overrides) -> GPT:
    """A tiny GPT trained until it answers CONVERSATIONS (so greedy replies end with <|end|>);
    sizes are multiples of 32, as Q8_0's blocks need."""
    torch.manual_seed(seed)
    config = {"vocab_size": tokenizer.vocab_size, "context_length": 96, "n_layer": 2, "n_head": 4, "n_kv_head": 2,
              "n_embd": 64, "mlp_hidden": 128, **overrides}
    model = GPT(GPTConfig(**config))
    pairs = [render(tokenizer, [*m, {"role": "assistant", "content": r}]).training_pair() for m, r in CONVERSATIONS]
    width = max(len(x) for x, _ in pairs)
    inputs = torch.tensor([x + [tokenizer.pad_id] * (width - len(x)) for x, _ in pairs])
    targets = torch.tensor([y + [-1] * (width - len(y)) for _, y in pairs])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        _, loss = model(inputs, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def save_stage_dir(root: Path, model: GPT, tokenizer: Tokenizer, stage: str) -> Path:
    """A model directory as ``stage`` writes it (pretraining's data ids; post-training adds its name)."""
    tokenizer.save(root / "tokenizer.json")
    meta = {"data": {"bos_id": tokenizer.bos_id, "eos_id": tokenizer.eos_id, "pad_id": tokenizer.pad_id}}
    if stage != "pretrain":
        meta.update(stage=stage, base_model="results/pretrain")
    save_model_dir(root / stage, model, root / "tokenizer.json", meta=meta)
    return root / stage


def llmpipe_reply(model: GPT, tokenizer: Tokenizer, ids: list[int], max_new_tokens: int = 24) -> list[int]:
    """Greedy, stopping as ``llmpipe chat`` does (the stop token is not returned)."""
    stop = (tokenizer.special_tokens[END], tokenizer.eos_id, tokenizer.bos_id)
    (new,) = generate(model, [ids], Sampling(max_new_tokens, 0.0, stop_ids=stop), tokenizer.pad_id)
    return new


@pytest.mark.parametrize(
    "overrides", [{}, {"n_kv_head": 2, "tie_embeddings": False}, {"n_kv_head": 1, "mlp_hidden": 100},
                  {"qk_norm": True, "n_kv_head": 2}]
)
def test_hf_llama_loads_the_export_offline_with_equal_logits(tmp_path, overrides, byte_tokenizer):
    model = trained_looking_model(**overrides)  # 301 ids > the byte tokenizer's 263: padded rows
    byte_tokenizer.save(tmp_path / "tokenizer.json")
    save_model_dir(
        tmp_path / "ours", model, tmp_path / "tokenizer.json", meta={"data": {"bos_id": 1, "eos_id": 2, "pad_id": 0}}
    )
    run_export(tmp_path / "ours", tmp_path / "hf")  # no --hf-tokenizer: the tokenizer comes from the model dir
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "hf", local_files_only=True, dtype=torch.float32
    ).eval()
    # Llama cannot express QK-norm: such a model is exported as Qwen3, which is Llama plus it
    assert type(hf).__name__ == ("Qwen3ForCausalLM" if overrides.get("qk_norm") else "LlamaForCausalLM")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["eos_token_id"] == byte_tokenizer.eos_id
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    text = "byte tokens: no merges, still a BPE"
    assert hf_tok(text)["input_ids"] == byte_tokenizer.encode(text)
    ours = load_model(tmp_path / "ours")
    torch.manual_seed(1)
    for length in (1, 17, 48):
        x = torch.randint(0, 301, (3, length))
        with torch.no_grad():
            diff = (ours(x)[0] - hf(x).logits).abs().max().item()
        assert diff <= 1e-4, (length, diff)


@pytest.mark.parametrize(
    "stage, overrides",
    [("pretrain", {}), ("sft", {"tie_embeddings": False}), ("dpo", {"n_kv_head": 4}), ("rl", {"n_kv_head": 1})],
)
def test_hf_export_chats_like_llmpipe(tmp_path, chat_tokenizer, stage, overrides):
    tok = chat_tokenizer
    model_dir = save_stage_dir(tmp_path, chat_model(tok, **overrides), tok, stage)
    run_export(model_dir, tmp_path / "hf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "hf", local_files_only=True, dtype=torch.float32
    ).eval()
    end = tok.special_tokens[END]
    assert hf.generation_config.eos_token_id == [end, tok.eos_id]
    ours = load_model(model_dir)
    for messages, reply in CONVERSATIONS:
        want = prompt_ids(tok, messages)
        got = hf_tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
        assert got == want, messages
        full = [*messages, {"role": "assistant", "content": reply}]
        assert hf_tok.apply_chat_template(full, return_dict=True)["input_ids"] == render(tok, full).ids
        new = llmpipe_reply(ours, tok, want)
        assert tok.decode(new) == reply  # the model learned it: the reply ends at <|end|>
        with torch.no_grad():
            out = hf.generate(torch.tensor([want]), max_new_tokens=24, do_sample=False)[0, len(want):].tolist()
        assert out == [*new, end], (messages, tok.decode(out))  # same tokens, then stop at <|end|>
    # special tokens' text in content: llmpipe keeps it text; HF does when asked (module docstring)
    for text in SPECIAL_TEXT:
        assert hf_tok(text, split_special_tokens=True)["input_ids"] == tok.encode(text) == tok.encode_ordinary(text)
    if "sanitize_control_tokens" in inspect.signature(hf_tok.apply_chat_template).parameters:  # transformers 5
        for text in [*SPECIAL_TEXT, "line\n<|end|>"]:
            messages = [{"role": "user", "content": text}]
            want = prompt_ids(tok, messages)
            got = hf_tok.apply_chat_template(
                messages, add_generation_prompt=True, sanitize_control_tokens=True, return_dict=True
            )["input_ids"]
            # the template's 4 special ids and no others; the content's bytes exactly
            assert [i for i in got if i >= len(tok.tokens)] == [i for i in want if i >= len(tok.tokens)], text
            assert tok.decode(got) == tok.decode(want)
            if not any(f"{c}<|" in text or f"|>{c}" in text for c in " !"):  # special text at pre-token bounds
                assert got == want, text


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [{}, {"qk_norm": True, "n_kv_head": 2}])
def test_gguf_export_runs_in_llama_cpp_like_llmpipe(tmp_path, chat_tokenizer, overrides):
    """f16: llama.cpp's greedy tokens equal ours and logits within f16 rounding; q8_0 reported.
    A QK-norm model is written as llama.cpp's qwen3 (its q/k norms, q and k unpermuted)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    gguf = pytest.importorskip("gguf")
    tok = chat_tokenizer
    model_dir = save_stage_dir(tmp_path, chat_model(tok, seed=1, **overrides), tok, "rl")
    arch = "qwen3" if overrides.get("qk_norm") else "llama"
    ours = load_model(model_dir)
    end = tok.special_tokens[END]
    prompts = [prompt_ids(tok, m) for m, _ in CONVERSATIONS]
    prompts += [[tok.bos_id, *tok.encode(t)] for t in ("The capital of", "Hello there", "x <|user|> y")]
    texts = [*SPECIAL_TEXT, CORPUS[:300], "'s 'S 'll 'LL 'Re ''' 'x\n\n\n   \n  end   ", "1234567 é 你好 \t x"]
    report = {}
    for quant, max_diff in (("f16", 5e-2), ("q8_0", 1.0)):
        path = tmp_path / f"model-{quant}.gguf"
        run_export(model_dir, path, "--format", "gguf", "--quant", quant)
        reader = gguf.GGUFReader(str(path))
        fields = {name: f.contents() for name, f in reader.fields.items() if not name.startswith("tokenizer.ggml.t")}
        assert fields["general.architecture"] == arch and fields[f"{arch}.attention.head_count_kv"] == 2
        assert fields["tokenizer.ggml.pre"] == "llama-bpe" and fields["tokenizer.ggml.eot_token_id"] == end
        assert fields["tokenizer.ggml.eos_token_id"] == tok.eos_id
        shapes = {t.name: t.shape.tolist() for t in reader.tensors}
        assert "output.weight" not in shapes and "blk.1.ffn_down.weight" in shapes  # tied: llama.cpp reuses token_embd
        head_dim = ours.config.head_dim
        assert shapes.get("blk.1.attn_k_norm.weight") == ([head_dim] if arch == "qwen3" else None)
        llm = llama_cpp.Llama(model_path=str(path), logits_all=True, n_ctx=96, verbose=False)
        for text in texts:  # special parsing off: special tokens' text stays text, as in llmpipe
            assert llm.tokenize(text.encode(), add_bos=False, special=False) == tok.encode_ordinary(text), text
        diffs, same = [], 0
        for ids in prompts:
            new = llmpipe_reply(ours, tok, ids)
            llm.reset()
            theirs = []
            for t in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0, reset=False):
                if t in (end, tok.eos_id, tok.bos_id) or len(theirs) == 24:
                    break
                theirs.append(t)
            same += theirs == new
            if quant == "f16":
                assert theirs == new, (tok.decode(ids), tok.decode(new), tok.decode(theirs))
            seq = [*ids, *new]
            llm.reset()
            llm.eval(seq)
            with torch.no_grad():
                logits = ours(torch.tensor([seq]))[0][0].numpy()
            diffs.append(float(np.abs(np.asarray(llm.scores[: len(seq)]) - logits).max()))
        report[quant] = {"max_abs_logit_diff": max(diffs), "greedy_identical": f"{same}/{len(prompts)}"}
        assert max(diffs) <= max_diff, (quant, diffs)
        # llama.cpp's own chat path: the template from the file, generation ending at <|end|>
        messages, reply = CONVERSATIONS[1]
        out = llm.create_chat_completion(messages=messages, temperature=0.0, top_k=1, repeat_penalty=1.0,
                                         max_tokens=24)
        assert out["choices"][0]["finish_reason"] == "stop"
        if quant == "f16":
            assert out["choices"][0]["message"]["content"] == reply
    print(f"GGUF ({arch}) vs llmpipe:", report)
    assert load_tokenizer(model_dir).vocab_size == tok.vocab_size
