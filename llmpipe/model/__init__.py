"""The language model: architecture (gpt.py), KV-cache generation (generate.py), model
directories (directory.py), device choice (device.py) and exports (export.py)."""
