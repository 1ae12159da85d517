"""The language model: architecture (gpt.py) and Hugging Face export (export.py)."""
