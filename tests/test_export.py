"""The architecture is what it claims: the HF Llama export gives our logits (fp32, <= 1e-4)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from llmpipe.model.directory import load_model, save_model_dir
from llmpipe.model.gpt import GPT
from tests.conftest import make_tiny_model

transformers = pytest.importorskip("transformers")  # in the test extras: pip install -e .[test]


def trained_looking_model(**overrides) -> GPT:
    """A small model with every weight, norm gains included, away from its init values."""
    model = make_tiny_model(**{"vocab_size": 301, "context_length": 48, "n_layer": 2, "n_head": 4, "n_kv_head": 4,
                               "n_embd": 64, "rope_theta": 500.0, **overrides})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize(
    "overrides", [{}, {"n_kv_head": 2, "tie_embeddings": False}, {"n_kv_head": 1, "mlp_hidden": 100}]
)
def test_hf_llama_loads_the_export_offline_with_equal_logits(tmp_path, overrides):
    model = trained_looking_model(**overrides)
    (tmp_path / "tokenizer.json").write_text("{}")
    save_model_dir(
        tmp_path / "ours", model, tmp_path / "tokenizer.json", meta={"data": {"bos_id": 1, "eos_id": 2, "pad_id": 0}}
    )
    # the CLI path a user runs: our model directory -> HF directory
    proc = subprocess.run(
        [
            sys.executable, "-m", "llmpipe.cli", "export",
            "--model", str(tmp_path / "ours"), "--output", str(tmp_path / "hf"),
        ],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "hf", local_files_only=True, dtype=torch.float32
    ).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["eos_token_id"] == 2
    ours = load_model(tmp_path / "ours")
    torch.manual_seed(1)
    for length in (1, 17, 48):
        x = torch.randint(0, 301, (3, length))
        with torch.no_grad():
            diff = (ours(x)[0] - hf(x).logits).abs().max().item()
        assert diff <= 1e-4, (length, diff)
