"""llmpipe's byte-level BPE tokenizer (Cython core in ext/) and its pipeline stages.

``Tokenizer`` is the API other packages use; see ``llmpipe.tokenizer.bpe`` for the id layout.
"""
from llmpipe.tokenizer.bpe import GPT4_PATTERN, SPECIAL_TOKENS, Tokenizer, TokenizerError

__all__ = ["GPT4_PATTERN", "SPECIAL_TOKENS", "Tokenizer", "TokenizerError"]
