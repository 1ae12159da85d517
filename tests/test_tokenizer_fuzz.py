"""Fuzz every entry of the compiled BPE core (llmpipe._bpe) and the Tokenizer's array paths.

The C code runs with bounds checks off, so a bad argument that slipped through would corrupt
memory. Each test states the contract as a plain-Python predicate (`offsets_ok`, ids in
range, ...), draws arguments on both sides of it, and checks in-process that every
argument the predicate rejects raises ValueError/TypeError (TokenizerError in the public
API), and that every accepted one gives the result of a pure-Python reference: the `regex`
split with tiktoken's educational BPE (`bpe_encode`, plus tiktoken's rule that a piece which is
itself a token is emitted whole), Counter for pre-token counts, `reference_merges` from
test_tokenizer for the trainer. Vocabularies are random (any byte strings, any order), not
only trained ones. Examples stay few (the whole file runs in seconds).
"""
from __future__ import annotations

import collections

import numpy as np
import pytest
import regex
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tiktoken._educational import bpe_encode

from llmpipe import _bpe
from llmpipe.tokenizer import GPT4_PATTERN, Tokenizer, TokenizerError
from llmpipe.tokenizer.bpe import char_classes, count_pretokens, pack_segments
from tests.test_tokenizer import ANY_CHAR, CORPUS, reference_merges

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.function_scoped_fixture])
CLS = char_classes()
BAD = (TypeError, ValueError)
I64 = st.integers(-(2**63), 2**63 - 1)


def offsets_ok(offsets: list[int], nbytes: int) -> bool:
    """The segment-offsets contract of every entry taking (buf, offsets)."""
    return (len(offsets) >= 1 and offsets[0] >= 0 and offsets[-1] <= nbytes
            and all(a <= b for a, b in zip(offsets, offsets[1:])))


def surrogatepass(data: bytes) -> str | None:
    """data as text the way the C splitter reads it, or None where no reference applies
    (malformed UTF-8: the C splitter takes each bad byte alone, Python has no such codec)."""
    try:
        return data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return None


def reference_pieces(data: bytes) -> list[bytes]:
    return [p.encode("utf-8", "surrogatepass") for p in regex.findall(GPT4_PATTERN, surrogatepass(data))]


def reference_encode(ranks: dict[bytes, int], pieces: list[bytes]) -> list[int]:
    """tiktoken's BPE in plain Python: a piece that is a token is that token, else merge the
    lowest-ranked adjacent pair, leftmost first."""
    out: list[int] = []
    for piece in pieces:
        out += [ranks[piece]] if piece in ranks else bpe_encode(ranks, piece, visualise=None)
    return out


# ---------------------------------------------------------------- strategies
@st.composite
def buffers_and_offsets(draw, text: bool = False):
    """(buf, offsets): text-derived or random bytes; offsets valid (a sorted cut list) or
    anything (negative, decreasing, past the end, empty)."""
    if text or draw(st.integers(0, 2)):
        parts = draw(st.lists(st.text(alphabet=ANY_CHAR, max_size=40), min_size=1, max_size=6))
        buf, offsets = pack_segments([p.encode("utf-8", "surrogatepass") for p in parts])
        offsets = offsets.tolist()
    else:
        buf = draw(st.binary(max_size=120))
        offsets = sorted(draw(st.lists(st.integers(0, len(buf)), min_size=1, max_size=8)))
    if not text and draw(st.integers(0, 2)) == 0:  # break the contract, or maybe not
        offsets = draw(st.one_of(
            st.lists(st.integers(-5, len(buf) + 5), max_size=8),
            st.lists(I64, max_size=4),
            st.just(offsets[::-1]),
            st.just([offsets[0] - 1] + offsets[1:]),
            st.just(offsets[:-1] + [len(buf) + 1]),
        ))
    return buf, offsets


@st.composite
def vocabularies(draw):
    """(tokens, n_ordinary): the 256 single bytes in a random order among random multi-byte
    tokens, then specials; sometimes broken (a byte missing, a token repeated)."""
    singles = [bytes([b]) for b in draw(st.permutations(range(256)))]
    extra = draw(st.lists(st.binary(min_size=2, max_size=5), max_size=40, unique=True))
    ordinary = [t for t in extra if t[0] % 3] + singles + [t for t in extra if not t[0] % 3]
    ordinary = [t for t in ordinary if len(t) == 1] if draw(st.booleans()) else ordinary
    broken = draw(st.sampled_from(["no"] * 4 + ["a byte missing", "a token repeated"]))
    if broken == "a byte missing":
        ordinary.remove(bytes([draw(st.integers(0, 255))]))
    elif broken == "a token repeated":
        ordinary.append(ordinary[draw(st.integers(0, len(ordinary) - 1))])
    specials = draw(st.lists(st.binary(max_size=6), max_size=3))
    return ordinary + specials, len(ordinary)


def vocab_ok(tokens: list[bytes], n_ordinary: int) -> bool:
    ordinary = tokens[:n_ordinary]
    return len(set(ordinary)) == len(ordinary) and all(bytes([b]) in set(ordinary) for b in range(256))


@pytest.fixture(scope="module")
def vocab():
    """A random-order vocabulary with merges that are not merge-closed (tiktoken-style)."""
    rng = np.random.default_rng(0)
    singles = [bytes([b]) for b in rng.permutation(256)]
    words = sorted({w.encode() for w in regex.findall(r"\w{2,6}", CORPUS[:20_000])})
    extra = [words[i] for i in rng.permutation(len(words))[:300]]
    tokens = extra[:150] + singles + extra[150:]
    specials = [b"<|s|>", b"ab"]
    buf, offsets = pack_segments(tokens + specials)
    enc = _bpe.Encoder(buf, offsets, len(tokens), CLS)
    return enc, tokens, specials


# ---------------------------------------------------------------- Encoder
@FUZZ
@given(vocabularies(), st.sampled_from(["as drawn"] * 6 + ["negative", "past the tokens"]))
def test_encoder_new_validates_or_builds(data, n_ordinary_is):
    tokens, n_ordinary = data
    n_ordinary = {"negative": -1, "past the tokens": len(tokens) + 1}.get(n_ordinary_is, n_ordinary)
    buf, offsets = pack_segments(tokens)
    if not (0 <= n_ordinary <= len(tokens)) or not vocab_ok(tokens, n_ordinary):
        event("rejected")
        with pytest.raises(ValueError):
            _bpe.Encoder(buf, offsets, n_ordinary, CLS)
        return
    enc = _bpe.Encoder(buf, offsets, n_ordinary, CLS)
    ranks = {t: i for i, t in enumerate(tokens[:n_ordinary])}
    text = CORPUS[:300]
    ids, ends = enc.encode(text.encode(), np.array([0, len(text.encode())], np.int64), True)
    assert ids.tolist() == reference_encode(ranks, reference_pieces(text.encode()))
    assert enc.decode(ids.astype(np.int64)) == text.encode()


@FUZZ
@given(st.binary(max_size=40), st.lists(st.integers(-5, 45), max_size=6), st.integers(0, 0x110002))
def test_encoder_new_rejects_bad_offsets_and_tables(buf, offsets, ncls):
    cls = CLS if ncls > 0x110000 else np.zeros(ncls, np.uint8)
    ok = offsets_ok(offsets, len(buf)) and ncls >= 0x110000
    if not ok:
        with pytest.raises(ValueError):
            _bpe.Encoder(buf, np.array(offsets, np.int64), 0, cls)
    else:  # no ordinary tokens: no single bytes
        with pytest.raises(ValueError, match="single-byte token"):
            _bpe.Encoder(buf, np.array(offsets, np.int64), 0, cls)


@FUZZ
@given(buffers_and_offsets(), st.booleans())
def test_encode_validates_and_equals_reference(vocab, data, split):
    enc, tokens, specials = vocab
    buf, offsets = data
    if not offsets_ok(offsets, len(buf)):
        event("rejected")
        with pytest.raises(ValueError, match="offsets"):
            enc.encode(buf, np.array(offsets, np.int64), split)
        return
    ids, ends = enc.encode(buf, np.array(offsets, np.int64), split)
    assert ids.dtype == np.uint32 and len(ends) == len(offsets) - 1
    ranks = {t: i for i, t in enumerate(tokens)}
    for k, (a, b) in enumerate(zip(offsets, offsets[1:])):
        seg, got = buf[a:b], ids[(ends[k - 1] if k else 0) : ends[k]].tolist()
        assert b"".join(tokens[i] for i in got) == seg  # every segment round-trips, any bytes
        if not split:
            event("segment checked against the reference")
            assert got == (reference_encode(ranks, [seg]) if seg else [])
        elif surrogatepass(seg) is not None:
            event("segment checked against the reference")
            assert got == reference_encode(ranks, reference_pieces(seg))


@FUZZ
@given(st.lists(st.one_of(st.text(alphabet=ANY_CHAR, max_size=50), st.binary(max_size=3), st.none()), max_size=6),
       st.integers(-2, 70), st.integers(-3, 100))
def test_encode_batch_validates_and_equals_reference(vocab, texts, chunk_chars, num_threads):
    enc, tokens, _ = vocab
    if chunk_chars < 0 or not all(isinstance(t, str) for t in texts):
        with pytest.raises(BAD):
            enc.encode_batch(texts, chunk_chars, num_threads)
        return
    ranks = {t: i for i, t in enumerate(tokens)}
    expected = [reference_encode(ranks, reference_pieces(t.encode("utf-8", "surrogatepass"))) for t in texts]
    assert enc.encode_batch(texts, chunk_chars, num_threads) == expected


@FUZZ
@given(st.lists(st.integers(-3, 600), max_size=8), st.lists(st.integers(-3, 10), max_size=6))
def test_id_lists_validates(vocab, ids, ends):
    enc, tokens, specials = vocab
    n_tokens = len(tokens) + len(specials)
    ok = (all(0 <= i < n_tokens for i in ids) and all(0 <= e <= len(ids) for e in ends)
          and all(a <= b for a, b in zip(ends, ends[1:])))
    ids_arr = np.array(ids, np.int64).astype(np.uint32)  # negative ids wrap past the vocabulary
    if not ok:
        with pytest.raises(ValueError):
            enc.id_lists(ids_arr, np.array(ends, np.int64))
        return
    assert enc.id_lists(ids_arr, np.array(ends, np.int64)) == [ids[a:b] for a, b in zip([0] + ends, ends)]


@FUZZ
@given(st.lists(st.one_of(st.integers(-3, 600), I64), max_size=8))
def test_decode_validates_and_equals_reference(vocab, ids):
    enc, tokens, specials = vocab
    every = tokens + specials
    if not all(0 <= i < len(every) for i in ids):
        with pytest.raises(ValueError, match="out of range"):
            enc.decode(np.array(ids, np.int64))
        return
    assert enc.decode(np.array(ids, np.int64)) == b"".join(every[i] for i in ids)


# ---------------------------------------------------------------- pre-token counts and trainer
@FUZZ
@given(buffers_and_offsets(), st.booleans(), st.sampled_from([0x110000, 0x110000, 0, 255, 0x10FFFF]))
def test_pretoken_counts_add_validates_and_equals_reference(data, split, ncls):
    buf, offsets = data
    cls = CLS if ncls == 0x110000 else np.zeros(ncls, np.uint8)
    counts = _bpe.PreTokenCounts()
    if not offsets_ok(offsets, len(buf)) or ncls != 0x110000:
        event("rejected")
        with pytest.raises(ValueError):
            counts.add(np.frombuffer(buf, np.uint8), np.array(offsets, np.int64), split, cls)
        assert len(counts) == 0
        return
    counts.add(np.frombuffer(buf, np.uint8), np.array(offsets, np.int64), split, cls)
    got = dict(counts.items())
    segments = [buf[a:b] for a, b in zip(offsets, offsets[1:])]
    assert sum(len(k) * v for k, v in got.items()) == sum(map(len, segments))  # covers every byte once
    if not split:
        event("checked against the reference split")
        assert got == dict(collections.Counter(s for s in segments if s))
    elif all(surrogatepass(s) is not None for s in segments):
        event("checked against the reference split")
        assert got == dict(collections.Counter(p for s in segments for p in reference_pieces(s)))
    counts.merge(counts)  # into itself: every count doubles
    assert dict(counts.items()) == {k: 2 * v for k, v in got.items()}


def test_pretoken_counts_guards():
    counts = _bpe.PreTokenCounts()
    counts.add(np.frombuffer(b"ab cd", np.uint8), np.array([0, 5], np.int64), True, CLS)
    with pytest.raises(TypeError):
        counts.merge(None)
    with pytest.raises(TypeError):
        counts.merge("counts")
    items = counts.items()
    next(items)
    counts.add(np.frombuffer(b"ef", np.uint8), np.array([0, 2], np.int64), True, CLS)
    with pytest.raises(RuntimeError, match="changed during items"):
        list(items)


@FUZZ
@given(st.lists(st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40), max_size=5),
       st.integers(0, 25))
def test_trainer_equals_reference_trainer(texts, n):
    trainer = _bpe.Trainer(count_pretokens(texts), np.arange(256, dtype=np.uint32))
    assert trainer.run(n) == len(trainer.merges())
    assert [tuple(m) for m in trainer.merges().tolist()] == reference_merges(texts, n)


@FUZZ
@given(st.one_of(st.permutations(range(256)), st.lists(st.integers(-1, 300), max_size=260),
                 st.permutations(range(256)).map(lambda p: p[:-1] + [p[0]])), st.integers(-3, 5))
def test_trainer_validates_byte_order_and_todo(order, todo):
    counts = count_pretokens(["abab cdcd abab"])
    keys = np.array(order, np.int64).astype(np.uint32)  # -1 wraps to 2**32 - 1
    if sorted(order) != list(range(256)):
        with pytest.raises(ValueError, match="byte_order"):
            _bpe.Trainer(counts, keys)
        return
    trainer = _bpe.Trainer(counts, keys)
    if todo < 0:
        with pytest.raises(ValueError, match="negative"):
            trainer.run(todo)
        return
    done = trainer.run(todo)
    merges = trainer.merges().tolist()
    assert done == len(merges) <= todo
    assert all(max(left, right) < 256 + i for i, (left, right) in enumerate(merges))


# ---------------------------------------------------------------- wrong types, every argument
def _bad_arrays(dtype) -> list:
    right = np.zeros(4, dtype)
    wrong = np.zeros(4, np.int32 if dtype != np.int32 else np.int64)
    return [None, "text", 3.5, [0, 1], wrong, np.zeros((2, 2), dtype), right[::2]]


def _entries(vocab):
    """Each array argument of each entry, with valid values for the others."""
    enc, tokens, specials = vocab
    buf, off, cls = np.zeros(4, np.uint8), np.array([0, 4], np.int64), CLS
    tb, toff = pack_segments([bytes([b]) for b in range(256)])
    counts = _bpe.PreTokenCounts()
    return {
        "PreTokenCounts.add buf": (np.uint8, lambda x: counts.add(x, off, True, cls)),
        "PreTokenCounts.add offsets": (np.int64, lambda x: counts.add(buf, x, True, cls)),
        "PreTokenCounts.add cls": (np.uint8, lambda x: counts.add(buf, off, True, x)),
        "Trainer byte_order": (np.uint32, lambda x: _bpe.Trainer(counts, x)),
        "Encoder tokens": (np.uint8, lambda x: _bpe.Encoder(x, toff, 256, cls)),
        "Encoder offsets": (np.int64, lambda x: _bpe.Encoder(np.frombuffer(tb, np.uint8), x, 256, cls)),
        "Encoder cls": (np.uint8, lambda x: _bpe.Encoder(np.frombuffer(tb, np.uint8), toff, 256, x)),
        "Encoder.encode buf": (np.uint8, lambda x: enc.encode(x, off, True)),
        "Encoder.encode offsets": (np.int64, lambda x: enc.encode(buf, x, True)),
        "Encoder.id_lists ids": (np.uint32, lambda x: enc.id_lists(x, np.array([0], np.int64))),
        "Encoder.id_lists ends": (np.int64, lambda x: enc.id_lists(np.zeros(4, np.uint32), x)),
        "Encoder.decode ids": (np.int64, lambda x: enc.decode(x)),
    }


def test_every_array_argument_rejects_wrong_types(vocab):
    for name, (dtype, call) in _entries(vocab).items():
        for bad in _bad_arrays(dtype):
            with pytest.raises(BAD):
                call(bad)
                pytest.fail(f"{name} accepted {bad!r}")
    enc = vocab[0]
    with pytest.raises(TypeError):
        _bpe.Trainer(None, np.arange(256, dtype=np.uint32))
    with pytest.raises(TypeError):
        enc.encode_batch(None, 10, 1)
    with pytest.raises(TypeError):
        enc.encode_batch(("a", "b"), 10, 1)  # a list, not any sequence: the workers read it in place
    read_only = np.frombuffer(b"abcd", np.uint8)  # read-only buffers (Arrow's) are fine
    off = np.array([0, 4], np.int64)
    assert enc.encode(read_only, off, True)[0].tolist() == enc.encode(b"abcd", off, True)[0].tolist()


# ---------------------------------------------------------------- the public API
@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train([CORPUS[:60_000]], vocab_size=400)


@FUZZ
@given(buffers_and_offsets(), st.integers(1, 4))
def test_encode_utf8_validates_and_equals_encode(tok, data, threads):
    buf, offsets = data
    if not offsets_ok(offsets, len(buf)):
        with pytest.raises(TokenizerError, match="offsets"):
            tok.encode_utf8(buf, np.array(offsets, np.int64), num_threads=threads)
        return
    ids, ends = tok.encode_utf8(buf, np.array(offsets), num_threads=threads)
    assert len(ends) == len(offsets) - 1 and tok.decode_bytes(ids) == buf[offsets[0] : offsets[-1]]
    for k, (a, b) in enumerate(zip(offsets, offsets[1:])):
        text = surrogatepass(buf[a:b])
        if text is not None:
            assert ids[(ends[k - 1] if k else 0) : ends[k]].tolist() == tok.encode(text)


@pytest.mark.parametrize("buf, offsets, match", [
    (b"abc", np.array([0.0, 1.5]), "integers"),
    (b"abc", np.array(["0", "3"]), "integers"),
    (b"abc", np.array([0, 2**64 - 1], np.uint64), "past int64"),
    (b"abc", np.zeros((2, 2), np.int64), "1-D"),
    (b"abc", [], "1-D with at least one"),
    (np.zeros(3, np.uint16), [0, 3], "1-D uint8"),
    (np.zeros((3, 1), np.uint8), [0, 3], "1-D uint8"),
    (memoryview(np.zeros(3, np.uint16)), [0, 3], "bytes"),
])
def test_encode_utf8_rejects_bad_arrays(tok, buf, offsets, match):
    with pytest.raises(TokenizerError, match=match):
        tok.encode_utf8(buf, offsets)


def test_encode_utf8_accepts_what_it_did(tok):
    """Buffers and offsets of every kind the pipeline passes still work, with the same ids."""
    text = CORPUS[:2000].encode()
    expected = tok.encode_utf8(text, np.array([0, 1000, 2000], np.int64))
    for buf in (text, bytearray(text), memoryview(text), np.frombuffer(text, np.uint8),
                np.frombuffer(text, np.int8), np.frombuffer(text + b"!", np.uint8)[:-1]):
        for offsets in ([0, 1000, 2000], np.array([0, 1000, 2000], np.int32), np.array([0.0, 1000.0, 2000.0])):
            got = tok.encode_utf8(buf, offsets)
            assert got[0].tolist() == expected[0].tolist() and got[1].tolist() == expected[1].tolist()
    with pytest.raises(TypeError, match="not str"):
        tok.encode_utf8("text", [0, 4])


@FUZZ
@given(st.lists(st.one_of(st.integers(-3, 420), I64, st.floats(-2, 420)), max_size=6))
def test_decode_validates(tok, ids):
    ok_value = lambda i: float(i).is_integer() and 0 <= i < tok.vocab_size  # noqa: E731
    if not all(ok_value(i) for i in ids):
        with pytest.raises(TokenizerError):
            tok.decode_bytes(ids)
        return
    assert tok.decode_bytes(ids) == b"".join(tok.token_bytes(int(i)) for i in ids)


def test_public_type_errors(tok):
    with pytest.raises(TypeError, match="text is bytes"):
        tok.encode(b"bytes")
    with pytest.raises(TypeError, match="sequence of str"):
        tok.encode_batch("one string")
    with pytest.raises(TokenizerError, match="must be integers"):
        tok.decode(["5"])
    with pytest.raises(TokenizerError, match="out of range"):
        tok.token_bytes(tok.vocab_size)
