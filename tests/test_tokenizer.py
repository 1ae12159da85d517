"""Oracles for the Cython BPE tokenizer: round trips, HF tokenizers, tiktoken, a reference trainer.

The corpus is real English text shipped with Python (pydoc's topic help, ~0.5 MB).
"""
from __future__ import annotations

import collections
import json
from pathlib import Path
from pydoc_data.topics import topics

import numpy as np
import pytest
import regex
import tiktoken
import tokenizers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmpipe.tokenizer import GPT4_PATTERN, SPECIAL_TOKENS, Tokenizer, TokenizerError
from llmpipe.tokenizer.bpe import (
    UNICODE_TOTALS,
    UnicodeVersionWarning,
    _pack_classes,
    char_classes,
    count_pretokens,
    pack_segments,
    unicode_version,
    unicode_version_of,
)
from llmpipe.tokenizer.hf import byte_to_unicode, export_hf, hf_byte_order

CORPUS = "".join(topics[k] for k in sorted(topics))
ADVERSARIAL = [
    "a" * 5000,
    " " * 3000 + "x",
    "\n" * 100 + "\r\n" * 50 + "\t \t",
    "1234567890" * 40,
    "你好世界，这是一个测试。日本語のテキストも。한국어 텍스트",
    "mixed Ελληνικά русский עברית عربي 123abc ABC'S it's I'LL we'VE",
    "emoji 👩‍👩‍👧‍👦 flags 🇫🇷 combining e\u0301\u0302 zero\u200bwidth NUL\x00 \x1c\x1d\x85\u00a0\u2028",
    "x" * (1 << 20),  # 1 MB without a space: a single pre-token
    "'s 'S 'ſ 'll 'LL 'Re ''' 'x\n\n\n   \n  end   ",
]
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train([CORPUS], vocab_size=1024)


def tiktoken_of(tok: Tokenizer) -> tiktoken.Encoding:
    return tiktoken.Encoding("ours", pat_str=tok.pattern, mergeable_ranks=tok.tiktoken_ranks(), special_tokens={})


# ---------------------------------------------------------------- API and layout
def test_id_layout_and_specials(tok):
    assert tok.vocab_size == 1024
    assert [tok.token_bytes(b) for b in range(256)] == [bytes([b]) for b in range(256)]
    for i, (left, right) in enumerate(tok.merges):
        assert tok.token_bytes(256 + i) == tok.token_bytes(left) + tok.token_bytes(right)
    assert list(tok.special_tokens) == list(SPECIAL_TOKENS)
    assert sorted(tok.special_tokens.values()) == list(range(1024 - len(SPECIAL_TOKENS), 1024))
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == tuple(tok.special_tokens[s] for s in SPECIAL_TOKENS[:3])
    assert tok.token_bytes(tok.special_tokens["<|user|>"]) == b"<|user|>"


def test_specials_only_when_allowed(tok):
    text = "web text <|user|> with <|bos|> inside"
    ordinary = tok.encode(text)
    assert not set(ordinary) & set(tok.special_tokens.values())
    assert ordinary == tok.encode_ordinary(text) and tok.decode(ordinary) == text
    allowed = tok.encode(text, allowed_special={"<|user|>"})
    assert allowed.count(tok.special_tokens["<|user|>"]) == 1
    assert tok.special_tokens["<|bos|>"] not in allowed
    assert tok.decode(tok.encode(text, allowed_special="all")) == text
    with pytest.raises(TokenizerError, match="unknown special"):
        tok.encode(text, allowed_special={"<|nope|>"})


def test_encode_batch_equals_encode(tok):
    docs = [CORPUS[i : i + 997] for i in range(0, 200_000, 997)] + ["", "x"]
    assert tok.encode_batch(docs) == [tok.encode(d) for d in docs]
    assert tok.encode_batch(docs, num_threads=1) == tok.encode_batch(docs, num_threads=2)
    assert tok.encode_batch(["a<|end|>"], allowed_special="all") == [tok.encode("a<|end|>", allowed_special="all")]


def test_encode_batch_in_many_chunks_on_threads(tok, monkeypatch):
    """Small chunks make encode_batch split its texts over several threads and merge back."""
    monkeypatch.setattr("llmpipe.tokenizer.bpe.ENCODE_CHUNK_CHARS", 3000)
    docs = [CORPUS[i : i + 300 + i % 900] for i in range(0, 300_000, 1000)] + ADVERSARIAL[:-1]
    expected = tiktoken_of(tok).encode_ordinary_batch(docs, num_threads=1)
    assert tok.encode_batch(docs, num_threads=1) == expected
    assert tok.encode_batch(docs, num_threads=3) == expected
    with pytest.raises(TypeError, match="text 1 is bytes, not str"):
        tok.encode_batch(["a", b"b"])


def test_id_lists_are_plain_lists_the_cycle_collector_skips(tok):
    import gc

    lists = tok.encode_batch(["some text", "more"]) + tok._core.id_lists(np.array([5, 6], np.uint32),
                                                                          np.array([1, 2], np.int64))
    assert not any(gc.is_tracked(ids) for ids in lists)  # ints only: no cycle to find
    gc.collect()
    lists[0].append("anything")  # still ordinary lists
    assert lists[0][-1] == "anything" and lists[2:] == [[5], [6]]


def test_id_lists_checks_its_arrays(tok):
    lists = tok._core.id_lists(np.array([5, 6, 7], np.uint32), np.array([1, 1, 3], np.int64))
    assert lists == [[5], [], [6, 7]]
    with pytest.raises(ValueError, match="out of order or past"):
        tok._core.id_lists(np.array([5], np.uint32), np.array([2], np.int64))
    with pytest.raises(ValueError, match="out of range"):
        tok._core.id_lists(np.array([tok.vocab_size], np.uint32), np.array([1], np.int64))


def test_save_load_roundtrip(tok, tmp_path):
    tok.save(tmp_path / "t.json")
    loaded = Tokenizer.load(tmp_path / "t.json")
    assert loaded.tokens == tok.tokens and loaded.merges == tok.merges
    assert loaded.special_tokens == tok.special_tokens and loaded.pattern == tok.pattern
    assert loaded.encode(CORPUS[:5000]) == tok.encode(CORPUS[:5000])


def test_load_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TokenizerError, match="bad.json"):
        Tokenizer.load(bad)
    bad.write_text(json.dumps({"format": "llmpipe-bpe", "version": 99}))
    with pytest.raises(TokenizerError, match="version 99"):
        Tokenizer.load(bad)
    bad.write_text(json.dumps({"format": "llmpipe-bpe", "version": 1, "tokens": ["!!"]}))
    with pytest.raises(TokenizerError, match="bad tokenizer file"):
        Tokenizer.load(bad)


def test_decode_rejects_out_of_range_ids(tok):
    with pytest.raises(TokenizerError, match="out of range"):
        tok.decode([1, tok.vocab_size])
    with pytest.raises(TokenizerError, match="out of range"):
        tok.decode([-1])


# ---------------------------------------------------------------- round trips and fuzz
ANY_CHAR = st.characters(codec=None, exclude_categories=())  # includes lone surrogates


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=ANY_CHAR, max_size=200))
def test_roundtrip_any_unicode(tok, text):
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size - len(SPECIAL_TOKENS) for i in ids)
    assert tok.decode(ids, errors="surrogatepass") == text
    if not regex.search(r"\p{Cs}", text):
        assert tok.decode(ids) == text


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(alphabet=ANY_CHAR, max_size=60), max_size=6))
def test_strs_read_in_place_equal_python_utf8(tok, texts):
    """encode_batch converts strs to UTF-8 in C, from any storage (ASCII, Latin-1, UCS-2,
    UCS-4, lone surrogates): ids equal those of Python's own "surrogatepass" UTF-8 bytes."""
    buf, offsets = pack_segments([t.encode("utf-8", "surrogatepass") for t in texts])
    ids, ends = tok.encode_utf8(buf, offsets)
    assert tok.encode_batch(texts) == [a.tolist() for a in np.split(ids, ends[:-1])][: len(texts)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_bytes_as_text(tok, data):
    for text in (data.decode("utf-8", "surrogateescape"), data.decode("latin-1")):
        assert tok.decode(tok.encode(text), errors="surrogatepass") == text


@pytest.mark.parametrize("text", ADVERSARIAL[:-1])
def test_roundtrip_adversarial(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_degenerate_training_corpora():
    with pytest.warns(UserWarning, match="only 0 merges"):
        empty = Tokenizer.train([], vocab_size=300)
    assert empty.vocab_size == 256 + len(SPECIAL_TOKENS) and empty.decode(empty.encode("héllo")) == "héllo"
    with pytest.warns(UserWarning, match="only 0 merges"):
        Tokenizer.train(["a"] * 10, vocab_size=300)
    with pytest.warns(UserWarning, match="supports only"):
        small = Tokenizer.train(["abcabc"], vocab_size=100_000)
    assert small.merges == [(97, 98), (256, 99), (257, 257)] and small.encode("abcabc") == [258]
    with pytest.raises(TokenizerError, match="smaller than 256"):
        Tokenizer.train(["abc"], vocab_size=100)
    with pytest.raises(TokenizerError, match="must be str or a path"):
        Tokenizer.train([b"bytes"], vocab_size=300)


# ---------------------------------------------------------------- oracles
def reference_merges(texts: list[str], n_merges: int, pattern: str = GPT4_PATTERN) -> list[tuple[int, int]]:
    """A plain-Python BPE trainer: recount all pairs per merge; most frequent pair wins,
    ties to the smallest (left, right); each word merged left to right."""
    words = collections.Counter(p.encode("utf-8") for t in texts for p in regex.findall(pattern, t))
    seqs = {w: list(w) for w in words}
    merges = []
    for new_id in range(256, 256 + n_merges):
        pairs = collections.Counter()
        for w, seq in seqs.items():
            for pair in zip(seq, seq[1:]):
                pairs[pair] += words[w]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        for w, seq in seqs.items():
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            seqs[w] = out
    return merges


def test_trainer_matches_reference_trainer():
    texts = [CORPUS[:30_000], "aaaa aaa abab ababab", "xyxyxy xy"]
    ours = Tokenizer.train(texts, vocab_size=256 + 150 + len(SPECIAL_TOKENS))
    assert ours.merges == reference_merges(texts, 150)


def test_trainer_parallel_and_streamed_inputs_agree(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS)
    lines = CORPUS.splitlines(keepends=True)
    from_lines = Tokenizer.train(lines, vocab_size=700, num_threads=1)
    from_file = Tokenizer.train([path], vocab_size=700, num_threads=2)
    assert from_file.merges == from_lines.merges


def test_trainer_matches_huggingface_trainer():
    lines = CORPUS.splitlines(keepends=True)
    n = 1500
    ours = Tokenizer.train(lines, vocab_size=256 + n + len(SPECIAL_TOKENS), byte_order=hf_byte_order())
    hf = tokenizers.Tokenizer(tokenizers.models.BPE())
    hf.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
        tokenizers.pre_tokenizers.Split(tokenizers.Regex(GPT4_PATTERN.replace("{1,3}+", "{1,3}")), "isolated"),
        tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=256 + n, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    hf.train_from_iterator(lines, trainer)
    chars = byte_to_unicode()
    text = lambda i: "".join(chars[b] for b in ours.tokens[i])  # noqa: E731
    assert [[text(a), text(b)] for a, b in ours.merges] == json.loads(hf.to_str())["model"]["merges"]


@pytest.fixture(scope="module")
def samples() -> list[str]:
    return [CORPUS[i : i + 4000] for i in range(0, len(CORPUS), 40_000)] + ADVERSARIAL


def test_ids_equal_huggingface_export(tok, samples, tmp_path):
    export_hf(tok, tmp_path)
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in samples:  # HF always matches added tokens inside text: samples hold none
        assert hf.encode(text, add_special_tokens=False).ids == tok.encode(text), text[:40]
    assert hf.decode(tok.encode(samples[0])) == samples[0]
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast.from_pretrained(str(tmp_path))
    assert fast.encode(samples[1]) == tok.encode(samples[1])
    assert fast.bos_token_id == tok.bos_id and fast.pad_token_id == tok.pad_id


def test_ids_equal_tiktoken(tok, samples):
    enc = tiktoken_of(tok)
    for text in samples:
        assert enc.encode_ordinary(text) == tok.encode_ordinary(text), text[:40]


def test_regex_fallback_pattern_equals_tiktoken(samples):
    gpt2 = Tokenizer.train([CORPUS[:100_000]], vocab_size=600, pattern=GPT2_PATTERN)
    enc = tiktoken_of(gpt2)
    for text in samples:
        assert enc.encode_ordinary(text) == gpt2.encode_ordinary(text), text[:40]
    assert gpt2.encode_batch(samples[:3]) == [gpt2.encode(t) for t in samples[:3]]


def test_cl100k_ranks_equal_tiktoken(tmp_path, samples):
    bpe_openai = pytest.importorskip("bpe_openai", reason="the bpe-openai wheel ships cl100k_base.tiktoken.gz")
    path = Path(bpe_openai.__file__).parent / "data" / "cl100k_base.tiktoken.gz"
    ours = Tokenizer.from_tiktoken(path)
    ranks = {t: i for i, t in enumerate(ours.tokens)}
    enc = tiktoken.Encoding("cl100k", pat_str=GPT4_PATTERN, mergeable_ranks=ranks, special_tokens={})
    for text in samples:
        assert ours.encode_ordinary(text) == enc.encode_ordinary(text), text[:40]
    assert ours.encode("<|user|>", allowed_special="all") == [len(ranks) + 4]


def test_splitter_matches_regex():
    """The compiled GPT-4 splitter cuts exactly where `regex` does, on every sample."""
    for text in ADVERSARIAL[:-1] + [CORPUS[:50_000]]:
        fast = dict(count_pretokens([text]).items())
        slow = collections.Counter(p.encode("utf-8", "surrogatepass") for p in regex.findall(GPT4_PATTERN, text))
        assert fast == dict(slow)


# ---------------------------------------------------------------- custom patterns with groups
def test_capture_groups_keep_the_whole_match(samples):
    """A custom pattern's groups do not drop text (findall would return the groups): pieces
    are whole matches, as tiktoken takes them, and ids equal the non-capturing pattern's."""
    grouped = r"""'(s|t|re)|( ?)\p{L}+| ?(\p{N})+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|(\s)+"""
    plain = regex.sub(r"\((?!\?)", "(?:", grouped)
    texts = [CORPUS[:50_000]]
    assert dict(count_pretokens(texts, grouped).items()) == dict(count_pretokens(texts, plain).items())
    tok = Tokenizer.train(texts, vocab_size=500, pattern=grouped)
    assert tok.merges == Tokenizer.train(texts, vocab_size=500, pattern=plain).merges
    enc = tiktoken_of(tok)
    for text in samples[:4] + ["it's 12345 re're  \n\n x"]:
        assert tok.encode(text) == enc.encode_ordinary(text)
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode_batch(samples[:3]) == [enc.encode_ordinary(t) for t in samples[:3]]


def test_bad_custom_pattern_is_a_tokenizer_error():
    with pytest.raises(TokenizerError, match="bad split pattern"):
        Tokenizer([bytes([b]) for b in range(256)], pattern="(unclosed")


# ---------------------------------------------------------------- Unicode version of the split tables
def test_unicode_version_counts_characters_like_unicodedata():
    """The regex module's Unicode version is found from how many characters it knows; the
    same count over Python's own unicodedata names unicodedata's version."""
    import unicodedata

    known = sum(1 for c in range(0x110000) if unicodedata.category(chr(c)) not in ("Cc", "Co", "Cs", "Cn"))
    assert unicode_version_of(known) == ".".join(unicodedata.unidata_version.split(".")[:2])
    assert unicode_version() in UNICODE_TOTALS.values()
    assert unicode_version_of(12345) == "unknown (12345 characters)"


def _other_unicode(path: Path) -> np.ndarray:
    """Rewrite tok's saved file as if built under another Unicode: U+00E9 (é) is no letter."""
    data = json.loads(path.read_text())
    table = char_classes().copy()
    table[0xE9] = 0
    data.update(unicode_version="16.0", regex_version="2024.1.1", char_classes=_pack_classes(table))
    path.write_text(json.dumps(data))
    return table


def test_tokenizer_json_records_its_unicode_tables(tok, tmp_path):
    import warnings

    tok.save(tmp_path / "t.json")
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["unicode_version"] == unicode_version() and data["regex_version"] == regex.__version__
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same tables: no warning
        loaded = Tokenizer.load(tmp_path / "t.json")
        assert loaded.classes is char_classes()
        for key in ("unicode_version", "regex_version", "char_classes"):  # an older file: none either
            del data[key]
        (tmp_path / "old.json").write_text(json.dumps(data))
        old = Tokenizer.load(tmp_path / "old.json")
    assert old.encode(CORPUS[:3000]) == tok.encode(CORPUS[:3000])
    old.save(tmp_path / "resaved.json")
    assert json.loads((tmp_path / "resaved.json").read_text())["unicode_version"] == unicode_version()


def test_other_unicode_tables_warn_and_keep_their_ids(tmp_path):
    tok = Tokenizer.train(["café thé " * 20], vocab_size=256 + 6 + len(SPECIAL_TOKENS))  # merges across é
    tok.save(tmp_path / "t.json")
    table = _other_unicode(tmp_path / "t.json")
    with pytest.warns(UnicodeVersionWarning, match=rf"Unicode 16.0 \(regex 2024.1.1\).*Unicode {unicode_version()}"):
        loaded = Tokenizer.load(tmp_path / "t.json")
    text = "café thé"
    same_tables = Tokenizer(tok.tokens, list(tok.special_tokens), tok.pattern, tok.merges, classes=table)
    assert loaded.encode(text) == same_tables.encode(text) != tok.encode(text)  # the file's split, not ours
    loaded.save(tmp_path / "again.json")  # and it keeps them
    again, data = (json.loads((tmp_path / name).read_text()) for name in ("again.json", "t.json"))
    assert again["unicode_version"] == "16.0" and again["char_classes"] == data["char_classes"]
    del data["char_classes"]  # a version without a table: still named
    (tmp_path / "bare.json").write_text(json.dumps(data))
    with pytest.warns(UnicodeVersionWarning, match="Unicode 16.0"):
        Tokenizer.load(tmp_path / "bare.json")
    data["char_classes"] = "!!"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(TokenizerError, match="bad tokenizer file"):
        Tokenizer.load(tmp_path / "bad.json")


def test_other_unicode_tables_warn_for_custom_patterns(tmp_path):
    gpt2 = Tokenizer.train([CORPUS[:20_000]], vocab_size=300, pattern=GPT2_PATTERN)
    gpt2.save(tmp_path / "t.json")
    _other_unicode(tmp_path / "t.json")
    with pytest.warns(UnicodeVersionWarning, match="ids may differ"):
        Tokenizer.load(tmp_path / "t.json")
