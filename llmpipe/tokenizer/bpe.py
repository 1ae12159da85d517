"""The byte-level BPE tokenizer: train, save/load, encode/decode, over the Cython core.

Ids: 0..255 are the single bytes (byte b has id b), then one id per learned merge in merge
order (an id is also its merge rank), then the special tokens at the end, in the order given.
Vocabularies loaded from tiktoken files keep their ranks as ids, specials follow the last rank.
Text is UTF-8 with lone surrogates passed through (``surrogatepass``), so every ``str``
encodes; ``decode(ids, errors="surrogatepass")`` gives such strings back exactly.

Pre-token splits follow the character classes of the installed `regex` module's Unicode
version. A saved tokenizer records that version and the class table itself (~4 KB), and a
loaded one splits with the recorded table, so the GPT-4 split gives the same ids under any
`regex`; loading under a different Unicode version warns, naming both.
"""
from __future__ import annotations

import base64
import functools
import gzip
import json
import os
import threading
import warnings
import zlib
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


N_CODE_POINTS = 0x110000
# Unicode's published character totals (graphic and format characters: every code point but
# Cc, Co, Cs and Cn) by version: how many a module knows tells which version it implements.
UNICODE_TOTALS = {
    136_690: "10.0", 137_374: "11.0", 137_928: "12.0", 137_929: "12.1", 143_859: "13.0",
    144_697: "14.0", 149_186: "15.0", 149_813: "15.1", 154_998: "16.0", 159_801: "17.0",
}


class TokenizerError(ValueError):
    """Bad tokenizer input or file; the message names the file, key or argument at fault."""


class UnicodeVersionWarning(UserWarning):
    """A tokenizer file's split tables come from another Unicode version than this process's."""


@functools.cache
def _all_code_points() -> str:
    """Every code point, surrogates included, as one 4.5 MB string (no million 1-char strs)."""
    return np.arange(N_CODE_POINTS, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")


@functools.cache
def char_classes() -> np.ndarray:
    """One byte per code point: 1 letter, 2 number, 4 whitespace, as the `regex` package sees
    them, so the compiled splitter and the regex fallback agree on all of Unicode."""
    table = np.zeros(N_CODE_POINTS, dtype=np.uint8)
    for bit, pattern in ((1, r"\p{L}+"), (2, r"\p{N}+"), (4, r"\s+")):
        for m in regex.finditer(pattern, _all_code_points()):
            table[m.start() : m.end()] |= bit
    table.setflags(write=False)  # shared by every tokenizer
    return table


def unicode_version_of(n_characters: int) -> str:
    """The Unicode version with `n_characters` graphic and format characters."""
    return UNICODE_TOTALS.get(n_characters, f"unknown ({n_characters} characters)")


@functools.cache
def unicode_version() -> str:
    """The Unicode version of the installed `regex` module, which char_classes() and the
    regex fallback split by (not Python's own ``unicodedata.unidata_version``)."""
    other = regex.finditer(r"[\p{Cc}\p{Co}\p{Cs}\p{Cn}]+", _all_code_points())
    return unicode_version_of(N_CODE_POINTS - sum(m.end() - m.start() for m in other))


def _pack_classes(table: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(np.ascontiguousarray(table, np.uint8).tobytes(), 9)).decode("ascii")


def _unpack_classes(text: str) -> np.ndarray:
    table = np.frombuffer(zlib.decompress(base64.b64decode(text, validate=True)), dtype=np.uint8)
    if len(table) != N_CODE_POINTS:
        raise ValueError(f"char_classes holds {len(table)} code points, not {N_CODE_POINTS}")
    return table


def _int_array(values, what: str) -> np.ndarray:
    """values as int64, refusing what np.asarray(..., int64) would silently change: fractions,
    strings, integers past int64."""
    arr = values if isinstance(values, np.ndarray) else np.asarray(values)
    kind = arr.dtype.kind
    if kind == "f" and arr.size and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
        raise TokenizerError(f"{what} must be integers, got non-integral {arr.dtype} values")
    if kind == "O":  # Python ints past int64, or mixed objects: let int64 conversion decide
        try:
            return np.asarray(arr, dtype=np.int64)
        except (OverflowError, TypeError, ValueError) as err:
            raise TokenizerError(f"{what} must be integers in int64: {err}") from None
    if kind not in "biuf":
        raise TokenizerError(f"{what} must be integers, not {arr.dtype} values")
    if kind == "u" and arr.dtype.itemsize == 8 and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise TokenizerError(f"{what} hold {arr.max()}, past int64")
    if kind == "f" and arr.size and np.abs(arr).max() >= 2.0**63:
        raise TokenizerError(f"{what} hold {np.abs(arr).max()}, past int64")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _utf8_buffer(buf) -> np.ndarray:
    """buf (bytes, bytearray, memoryview, Arrow buffer, or a 1-D uint8/int8 array) as uint8."""
    if isinstance(buf, np.ndarray):
        if buf.dtype not in (np.uint8, np.int8) or buf.ndim != 1:
            raise TokenizerError(f"buf must be a 1-D uint8 array of UTF-8, not {buf.ndim}-D {buf.dtype}")
        return np.ascontiguousarray(buf).view(np.uint8)
    if isinstance(buf, str):
        raise TypeError("buf must be UTF-8 bytes, not str")
    try:
        view = memoryview(buf)
    except TypeError:
        raise TypeError(f"buf must be UTF-8 bytes or a uint8 array, not {type(buf).__name__}") from None
    if view.itemsize != 1:
        raise TokenizerError(f"buf must hold bytes, not {view.itemsize}-byte items (format {view.format!r})")
    return np.frombuffer(view if view.c_contiguous else view.tobytes(), dtype=np.uint8)


def check_offsets(offsets, nbytes: int) -> np.ndarray:
    """Segment offsets as int64, checked: 1-D, at least one, non-decreasing, first >= 0,
    last <= nbytes (what the compiled core needs; it checks again)."""
    offsets = _int_array(offsets, "offsets")
    if offsets.ndim != 1 or len(offsets) < 1:
        raise TokenizerError(f"offsets must be 1-D with at least one value, got shape {offsets.shape}")
    if offsets[0] < 0:
        raise TokenizerError(f"offsets[0] = {offsets[0]} is negative")
    down = np.flatnonzero(offsets[1:] < offsets[:-1])
    if len(down):
        k = int(down[0]) + 1
        raise TokenizerError(f"offsets decrease: offsets[{k}] = {offsets[k]} < offsets[{k - 1}] = {offsets[k - 1]}")
    if offsets[-1] > nbytes:
        raise TokenizerError(f"offsets[-1] = {offsets[-1]} is past the end of the {nbytes}-byte buffer")
    return offsets


def _compile(pattern: str):
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str, not {type(pattern).__name__}")
    try:
        return regex.compile(pattern)
    except regex.error as err:
        raise TokenizerError(f"bad split pattern {pattern!r}: {err}") from None


def split(compiled, text: str) -> list[str]:
    """The pre-tokens of text: whole matches, so groups in a custom pattern keep their text
    (``findall`` would return the groups); as tiktoken splits."""
    return [m.group() for m in compiled.finditer(text)]


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
        *,
        classes: np.ndarray | None = None,
        unicode: dict[str, str] | None = None,
    ):
        """`classes` (one byte per code point, see char_classes()) and `unicode` (the
        "unicode_version" and "regex_version" they were built with) default to this process's."""
        self.tokens = list(tokens)
        self.merges = None if merges is None else [tuple(map(int, m)) for m in merges]
        self.pattern = pattern
        n = len(self.tokens)
        special_tokens = list(special_tokens)
        for s in special_tokens:
            if not isinstance(s, str):
                raise TypeError(f"special token {s!r} is {type(s).__name__}, not str")
        if len(set(special_tokens)) != len(special_tokens):
            raise TokenizerError(f"special tokens repeat: {list(special_tokens)}")
        self.special_tokens: dict[str, int] = {s: n + i for i, s in enumerate(special_tokens)}
        self._fast_split = pattern == GPT4_PATTERN
        self._regex = _compile(pattern)
        if classes is None:
            classes = char_classes()
            unicode = {"unicode_version": unicode_version(), "regex_version": regex.__version__}
        self.classes = classes
        self.unicode = dict(unicode or {})
        all_bytes = self.tokens + [utf8(s) for s in special_tokens]
        buf, offsets = pack_segments(all_bytes)
        try:
            self._core = _bpe.Encoder(buf, offsets, n, classes)
        except ValueError as err:
            raise TokenizerError(str(err)) from None

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
        return self.decode_bytes([token_id])

    # ---------------------------------------------------------------- encoding
    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text with no special tokens: '<|user|>' in the text is just bytes."""
        if not isinstance(text, str):
            raise TypeError(f"text is {type(text).__name__}, not str")
        if self._fast_split:
            return self._core.encode_batch([text], ENCODE_CHUNK_CHARS, 1)[0]
        return self._core.id_lists(*self._encode_regex([text]))[0]

    def encode(self, text: str, allowed_special: Collection[str] | Literal["all"] = frozenset()) -> list[int]:
        """Encode text; only the special tokens named in `allowed_special` (or "all") are
        recognised, every other occurrence of a special's text stays ordinary bytes."""
        allowed = self._allowed(allowed_special)
        if not allowed or not isinstance(text, str):
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
        if isinstance(texts, (str, bytes)):
            raise TypeError(f"texts must be a sequence of str, not one {type(texts).__name__}")
        texts = list(texts)
        if self._allowed(allowed_special):
            with ThreadPoolExecutor(max(1, num_threads)) as pool:
                return list(pool.map(lambda t: self.encode(t, allowed_special), texts))
        if self._fast_split:
            return self._core.encode_batch(texts, ENCODE_CHUNK_CHARS, num_threads)
        for k, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {k} is {type(text).__name__}, not str")
        with ThreadPoolExecutor(max(1, num_threads)) as pool:
            parts = pool.map(self._encode_regex, [texts[i : i + 256] for i in range(0, len(texts), 256)])
            return [ids for part in parts for ids in self._core.id_lists(*part)]

    def encode_utf8(
        self, buf: bytes | np.ndarray, offsets: np.ndarray, num_threads: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encode UTF-8 documents buf[offsets[k]:offsets[k+1]] without specials, in parallel.

        Returns (ids uint32, ends int64) where document k's ids are ids[ends[k-1]:ends[k]].
        This is the zero-copy path for Arrow string columns (the tokenize stage). `buf` is
        bytes-like or a 1-D uint8 array; `offsets` are integers, non-decreasing, from >= 0 to
        <= len(buf) (checked: TokenizerError otherwise)."""
        buf = _utf8_buffer(buf)
        offsets = check_offsets(offsets, len(buf))
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

    def _encode_utf8_chunk(self, buf: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._fast_split:
            return self._core.encode(buf, offsets, True)
        texts = [bytes(buf[a:b]).decode("utf-8", "surrogatepass") for a, b in zip(offsets[:-1], offsets[1:])]
        return self._encode_regex(texts)

    def _encode_regex(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The fallback for other split patterns: regex pieces become the segments, and
        piece ends map back to documents."""
        pieces = [[utf8(p) for p in split(self._regex, t)] for t in texts]
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
        """The concatenated bytes of ids (integers in [0, vocab_size); TokenizerError else)."""
        ids = _int_array(ids, "token ids").reshape(-1)
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
        """Write our versioned JSON (tokens as base64 by id, merges, pattern, specials, and the
        split's class table with the Unicode and `regex` versions it came from)."""
        data = {
            "format": FORMAT,
            "version": VERSION,
            "pattern": self.pattern,
            "tokens": [base64.b64encode(t).decode("ascii") for t in self.tokens],
            "merges": self.merges,
            "special_tokens": list(self.special_tokens),
            **self.unicode,
            "char_classes": _pack_classes(self.classes),
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
            classes, unicode = None, None
            if "char_classes" in data:
                classes = _unpack_classes(data["char_classes"])
                unicode = {k: str(data.get(k, "unknown")) for k in ("unicode_version", "regex_version")}
                if np.array_equal(classes, char_classes()):
                    classes = char_classes()  # share this process's table (1.1 MB)
            tok = cls(tokens, data["special_tokens"], data["pattern"], data["merges"],
                      classes=classes, unicode=unicode)
        except (KeyError, TypeError, ValueError, zlib.error) as err:
            raise TokenizerError(f"{path}: bad tokenizer file: {type(err).__name__}: {err}") from None
        tok._check_unicode(path, data.get("unicode_version"), "char_classes" in data)
        return tok

    def _check_unicode(self, path, recorded: str | None, had_table: bool) -> None:
        """Warn when a file's split tables differ from this process's. Files from before the
        tables were recorded have neither: they split with this process's, silently."""
        if had_table:
            if self.classes is char_classes():  # equal tables: nothing splits differently
                return
            changed = f"{np.count_nonzero(self.classes != char_classes())} code points differ in class"
        elif recorded is None or recorded == unicode_version():
            return
        else:
            changed = "the file has no table to compare"
        theirs = f"Unicode {recorded or 'unknown'} (regex {self.unicode.get('regex_version', 'unknown')})"
        ours = f"Unicode {unicode_version()} (regex {regex.__version__})"
        if self._fast_split and had_table:
            effect = ("ids are unchanged (the GPT-4 splitter uses the file's tables), but tiktoken and "
                      "Hugging Face exports split by their own Unicode tables")
        else:
            effect = "this split uses this process's regex module, so ids may differ there"
        warnings.warn(f"{path}: split tables built with {theirs}, this process has {ours} ({changed}); {effect}",
                      UnicodeVersionWarning, stacklevel=3)

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
    compiled = _compile(pattern)
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
            buf, offsets = pack_segments([utf8(p) for d in docs for p in split(compiled, d)])
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
