"""The byte-level BPE tokenizer: train, save/load, encode/decode, over the Cython core.

Ids: 0..255 are the single bytes (byte b has id b), then one id per learned merge in merge
order (an id is also its merge rank), then the special tokens at the end, in the order given.
Vocabularies loaded from tiktoken files keep their ranks as ids, specials follow the last rank.
Text is UTF-8 with lone surrogates passed through (``surrogatepass``), so every ``str``
encodes; ``decode(ids, errors="surrogatepass")`` gives such strings back exactly.
"""
from __future__ import annotations

import base64
import functools
import gzip
import json
import os
import threading
import warnings
from collections.abc import Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import regex

from llmpipe import _bpe
from llmpipe.io import atomic_path

# tiktoken's cl100k_base split: contractions, letter runs with one leading non-letter,
# 1-3 digit groups, punctuation runs, newline-aware whitespace.
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
SPECIAL_TOKENS = ("<|bos|>", "<|eos|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
FORMAT, VERSION = "llmpipe-bpe", 1
BATCH_BYTES = 2 << 20  # pre-token counting works on ~2 MB batches of text
ENCODE_CHUNK_CHARS = 1 << 17  # encode_batch hands threads chunks of ~128K characters


class TokenizerError(ValueError):
    """Bad tokenizer input or file; the message names the file, key or argument at fault."""


@functools.cache
def char_classes() -> np.ndarray:
    """One byte per code point: 1 letter, 2 number, 4 whitespace, as the `regex` package sees
    them, so the compiled splitter and the regex fallback agree on all of Unicode."""
    # every code point, surrogates included, as one 4.5 MB string (no million 1-char strs)
    chars = np.arange(0x110000, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")
    table = np.zeros(0x110000, dtype=np.uint8)
    for bit, pattern in ((1, r"\p{L}+"), (2, r"\p{N}+"), (4, r"\s+")):
        for m in regex.finditer(pattern, chars):
            table[m.start() : m.end()] |= bit
    return table


def utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def pack_segments(chunks: Sequence[bytes]) -> tuple[bytes, np.ndarray]:
    """Concatenate byte strings; return the buffer and the int64 offsets (len(chunks)+1)."""
    offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
    np.cumsum([len(c) for c in chunks], out=offsets[1:])
    return b"".join(chunks), offsets


class Tokenizer:
    """A byte-level BPE vocabulary with special tokens; see the module docstring for ids."""

    def __init__(
        self,
        tokens: Sequence[bytes],
        special_tokens: Sequence[str] = SPECIAL_TOKENS,
        pattern: str = GPT4_PATTERN,
        merges: Sequence[tuple[int, int]] | None = None,
    ):
        self.tokens = list(tokens)
        self.merges = None if merges is None else [tuple(map(int, m)) for m in merges]
        self.pattern = pattern
        n = len(self.tokens)
        if len(set(special_tokens)) != len(special_tokens):
            raise TokenizerError(f"special tokens repeat: {list(special_tokens)}")
        self.special_tokens: dict[str, int] = {s: n + i for i, s in enumerate(special_tokens)}
        self._fast_split = pattern == GPT4_PATTERN
        self._regex = None if self._fast_split else regex.compile(pattern)
        self._special_re = None
        all_bytes = self.tokens + [utf8(s) for s in special_tokens]
        buf, offsets = pack_segments(all_bytes)
        self._core = _bpe.Encoder(buf, offsets, n, char_classes())

    # ---------------------------------------------------------------- properties
    @property
    def vocab_size(self) -> int:
        return len(self.tokens) + len(self.special_tokens)

    def _special(self, name: str) -> int:
        if name not in self.special_tokens:
            raise TokenizerError(f"this tokenizer has no special token {name}")
        return self.special_tokens[name]

    @property
    def bos_id(self) -> int:
        return self._special("<|bos|>")

    @property
    def eos_id(self) -> int:
        return self._special("<|eos|>")

    @property
    def pad_id(self) -> int:
        return self._special("<|pad|>")

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for (a special token's text for specials)."""
        return self._core.decode(np.array([token_id], dtype=np.int64))

    # ---------------------------------------------------------------- encoding
    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text with no special tokens: '<|user|>' in the text is just bytes."""
        if self._fast_split:
            return self._core.encode_batch([text], ENCODE_CHUNK_CHARS, 1)[0]
        return self._core.id_lists(*self._encode_regex([text]))[0]

    def encode(self, text: str, allowed_special: Collection[str] | Literal["all"] = frozenset()) -> list[int]:
        """Encode text; only the special tokens named in `allowed_special` (or "all") are
        recognised, every other occurrence of a special's text stays ordinary bytes."""
        allowed = self._allowed(allowed_special)
        if not allowed:
            return self.encode_ordinary(text)
        pattern = regex.compile("|".join(regex.escape(s) for s in sorted(allowed, key=len, reverse=True)))
        out: list[int] = []
        start = 0
        for m in pattern.finditer(text):
            out += self.encode_ordinary(text[start : m.start()])
            out.append(self.special_tokens[m.group()])
            start = m.end()
        return out + self.encode_ordinary(text[start:])

    def encode_batch(
        self,
        texts: Sequence[str],
        allowed_special: Collection[str] | Literal["all"] = frozenset(),
        num_threads: int = 2,
    ) -> list[list[int]]:
        """Encode many texts on `num_threads` threads, the calling one included.

        With the GPT-4 split, C threads encode ~128K-character chunks without ever taking the
        GIL, while the calling thread alone builds the lists (and encodes when it would wait)."""
        texts = list(texts)
        if self._allowed(allowed_special):
            with ThreadPoolExecutor(num_threads) as pool:
                return list(pool.map(lambda t: self.encode(t, allowed_special), texts))
        if self._fast_split:
            return self._core.encode_batch(texts, ENCODE_CHUNK_CHARS, num_threads)
        with ThreadPoolExecutor(num_threads) as pool:
            parts = pool.map(self._encode_regex, [texts[i : i + 256] for i in range(0, len(texts), 256)])
            return [ids for part in parts for ids in self._core.id_lists(*part)]

    def encode_utf8(
        self, buf: bytes | np.ndarray, offsets: np.ndarray, num_threads: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encode UTF-8 documents buf[offsets[k]:offsets[k+1]] without specials, in parallel.

        Returns (ids uint32, ends int64) where document k's ids are ids[ends[k-1]:ends[k]].
        This is the zero-copy path for Arrow string columns (the tokenize stage)."""
        offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        ndocs = len(offsets) - 1
        if num_threads <= 1 or ndocs < 2 * num_threads:
            return self._encode_utf8_chunk(buf, offsets)
        cuts = np.linspace(0, ndocs, num_threads + 1).astype(int)
        parts = [offsets[a : b + 1] for a, b in zip(cuts[:-1], cuts[1:])]
        with ThreadPoolExecutor(num_threads) as pool:
            results = list(pool.map(lambda o: self._encode_utf8_chunk(buf, o), parts))
        shift = np.cumsum([0] + [len(ids) for ids, _ in results[:-1]])
        return (np.concatenate([ids for ids, _ in results]),
                np.concatenate([ends + s for (_, ends), s in zip(results, shift)]))

    def _encode_utf8_chunk(self, buf, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._fast_split:
            return self._core.encode(np.frombuffer(buf, dtype=np.uint8), offsets, True)
        texts = [bytes(buf[a:b]).decode("utf-8", "surrogatepass") for a, b in zip(offsets[:-1], offsets[1:])]
        return self._encode_regex(texts)

    def _encode_regex(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The fallback for other split patterns: regex pieces become the segments, and
        piece ends map back to documents."""
        pieces = [[utf8(p) for p in self._regex.findall(t)] for t in texts]
        buf, offsets = pack_segments([p for doc in pieces for p in doc])
        ids, piece_ends = self._core.encode(buf, offsets, False)
        pieces_through = np.cumsum([len(doc) for doc in pieces], dtype=np.int64)
        return ids, np.concatenate([[0], piece_ends])[pieces_through].astype(np.int64)

    def _allowed(self, allowed_special: Collection[str] | Literal["all"]) -> frozenset[str]:
        if allowed_special == "all":
            return frozenset(self.special_tokens)
        allowed = frozenset(allowed_special)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise TokenizerError(f"allowed_special names unknown special tokens: {sorted(unknown)}")
        return allowed

    # ---------------------------------------------------------------- decoding
    def decode_bytes(self, ids: Sequence[int] | np.ndarray) -> bytes:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        try:
            return self._core.decode(ids)
        except ValueError as err:
            raise TokenizerError(str(err)) from None

    def decode(self, ids: Sequence[int] | np.ndarray, errors: str = "replace") -> str:
        """The text of ids; bytes that are not valid UTF-8 are handled by `errors`."""
        return self.decode_bytes(ids).decode("utf-8", errors)

    # ---------------------------------------------------------------- training
    @classmethod
    def train(
        cls,
        texts: Iterable[str | os.PathLike],
        vocab_size: int,
        pattern: str = GPT4_PATTERN,
        special_tokens: Sequence[str] = SPECIAL_TOKENS,
        num_threads: int = 2,
        byte_order: Sequence[int] | None = None,
        progress: bool = False,
    ) -> Tokenizer:
        """Learn merges until the vocabulary (bytes + merges + specials) has `vocab_size` ids.

        `texts` items are strings, or paths: ``.parquet`` files (their `text` column) and
        other files (UTF-8, each line with its newline one unit, as Hugging Face trains).
        Pre-tokens are counted on `num_threads` threads in ~8 MB batches. Merges go to the
        most frequent pair; ties to the smallest (key(left), key(right)), where a merged
        token's key is its id and byte b's key is byte_order[b] (default: b). A corpus with
        fewer distinct pairs than asked for gives a smaller vocabulary, with a warning.
        """
        n_merges = vocab_size - 256 - len(special_tokens)
        if n_merges < 0:
            raise TokenizerError(
                f"vocab_size {vocab_size} is smaller than 256 bytes + {len(special_tokens)} special tokens"
            )
        order = np.arange(256, dtype=np.uint32) if byte_order is None else np.asarray(byte_order, dtype=np.uint32)
        if sorted(order.tolist()) != list(range(256)):
            raise TokenizerError("byte_order must be a permutation of 0..255")
        counts = count_pretokens(texts, pattern, num_threads)
        trainer = _bpe.Trainer(counts, order)
        del counts
        bar = _progress(n_merges, progress)
        done = 0
        while done < n_merges:
            learned = trainer.run(min(256, n_merges - done))
            bar.update(learned - done)
            if learned == done:
                break
            done = learned
        bar.close()
        merges = trainer.merges().tolist()
        del trainer  # free its word and pair tables before the tokenizer's own are built
        if len(merges) < n_merges:
            warnings.warn(f"corpus supports only {len(merges)} merges, not {n_merges}: vocab_size "
                          f"is {256 + len(merges) + len(special_tokens)}", stacklevel=2)
        tokens = [bytes([b]) for b in range(256)]
        for left, right in merges:
            tokens.append(tokens[left] + tokens[right])
        return cls(tokens, special_tokens, pattern, merges)

    # ---------------------------------------------------------------- files
    def save(self, path: str | os.PathLike) -> None:
        """Write our versioned JSON (tokens as base64 by id, merges, pattern, specials)."""
        data = {
            "format": FORMAT,
            "version": VERSION,
            "pattern": self.pattern,
            "tokens": [base64.b64encode(t).decode("ascii") for t in self.tokens],
            "merges": self.merges,
            "special_tokens": list(self.special_tokens),
        }
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise TokenizerError(f"{path}: cannot read tokenizer JSON: {err}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise TokenizerError(f"{path}: not an {FORMAT} file (key 'format')")
        if data.get("version") != VERSION:
            raise TokenizerError(f"{path}: version {data.get('version')!r}, this llmpipe reads {VERSION}")
        try:
            tokens = [base64.b64decode(t, validate=True) for t in data["tokens"]]
            return cls(tokens, data["special_tokens"], data["pattern"], data["merges"])
        except (KeyError, TypeError, ValueError) as err:
            raise TokenizerError(f"{path}: bad tokenizer file: {type(err).__name__}: {err}") from None

    @classmethod
    def from_tiktoken(
        cls, path: str | os.PathLike, pattern: str = GPT4_PATTERN, special_tokens: Sequence[str] = SPECIAL_TOKENS
    ) -> Tokenizer:
        """Load tiktoken mergeable ranks ('<base64 token> <rank>' lines, optionally .gz);
        ranks must be 0..n-1 and become the ids, so ids equal tiktoken's."""
        opener = gzip.open if str(path).endswith(".gz") else open
        ranks: dict[int, bytes] = {}
        with opener(path, "rt") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    token, rank = line.split()
                    ranks[int(rank)] = base64.b64decode(token, validate=True)
                except ValueError:
                    raise TokenizerError(f"{path}:{lineno}: expected '<base64 token> <rank>'") from None
        if sorted(ranks) != list(range(len(ranks))):
            raise TokenizerError(f"{path}: ranks are not 0..{len(ranks) - 1}")
        return cls([ranks[i] for i in range(len(ranks))], special_tokens, pattern)

    def tiktoken_ranks(self) -> dict[bytes, int]:
        """Mergeable ranks for ``tiktoken.Encoding(..., mergeable_ranks=...)``."""
        return {t: i for i, t in enumerate(self.tokens)}

    def save_tiktoken(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text("".join(f"{base64.b64encode(t).decode()} {i}\n" for i, t in enumerate(self.tokens)))


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="BPE merges", unit="merge", disable=not enabled, mininterval=1.0)


# -------------------------------------------------------------------- pre-token counting
def count_pretokens(
    texts: Iterable[str | os.PathLike], pattern: str = GPT4_PATTERN, num_threads: int = 2
) -> _bpe.PreTokenCounts:
    """Count unique pre-tokens over strings and files, batches counted on `num_threads`."""
    fast = pattern == GPT4_PATTERN
    compiled = None if fast else regex.compile(pattern)
    classes = char_classes()
    local = threading.local()
    counters: list[_bpe.PreTokenCounts] = []
    lock = threading.Lock()

    def count(batch: tuple[bytes | np.ndarray, np.ndarray]) -> None:
        if not hasattr(local, "counts"):
            local.counts = _bpe.PreTokenCounts()
            with lock:
                counters.append(local.counts)
        buf, offsets = batch
        if not fast:  # split in Python; each piece is one segment
            docs = (bytes(buf[a:b]).decode("utf-8", "surrogatepass") for a, b in zip(offsets[:-1], offsets[1:]))
            buf, offsets = pack_segments([utf8(p) for d in docs for p in compiled.findall(d)])
        local.counts.add(np.frombuffer(buf, dtype=np.uint8), offsets, fast, classes)

    with ThreadPoolExecutor(max(1, num_threads)) as pool:
        pending = []
        for batch in _batches(texts):
            pending.append(pool.submit(count, batch))
            if len(pending) >= 2 * num_threads:  # bound the memory held by queued batches
                pending.pop(0).result()
        for fut in pending:
            fut.result()
    total = counters[0] if counters else _bpe.PreTokenCounts()
    for other in counters[1:]:
        total.merge(other)
    return total


def _batches(items: Iterable[str | os.PathLike]) -> Iterator[tuple[bytes | np.ndarray, np.ndarray]]:
    """(UTF-8 buffer, segment offsets) batches of ~BATCH_BYTES from strings and files."""
    pending: list[bytes] = []
    size = 0
    for item in items:
        if isinstance(item, str):
            pending.append(utf8(item))
            size += len(pending[-1])
            if size >= BATCH_BYTES:
                yield pack_segments(pending)
                pending, size = [], 0
        elif isinstance(item, os.PathLike):
            yield from _file_batches(Path(item))
        else:
            raise TokenizerError(f"training input must be str or a path, got {type(item).__name__}")
    if pending:
        yield pack_segments(pending)


def _file_batches(path: Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    if path.suffix == ".parquet":
        from llmpipe.tokenizer.arrow import parquet_text_batches

        yield from parquet_text_batches(path)
        return
    with open(path, "rb") as fh:
        tail = b""
        while block := fh.read(BATCH_BYTES):
            data = tail + block
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                tail = data
                continue
            tail = data[cut:]
            yield _lines(data[:cut])
        if tail:
            yield _lines(tail)


def _lines(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Each line with its newline as one segment."""
    buf = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10) + 1
    if not len(ends) or ends[-1] != len(buf):
        ends = np.append(ends, len(buf))
    return buf, np.concatenate([[0], ends]).astype(np.int64)
