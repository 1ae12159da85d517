# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled core of MinHash deduplication: normalize, shingle, hash and permute in one pass.

Signatures equal datasketch 2.x ``MinHash(scheme="affine32", hashfunc=xxhash.xxh32_intdigest)``;
the Python API (validation, normalization, files) lives in llmpipe.data.dedup.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy

import numpy as np


cdef extern from "Python.h":
    # PEP 393 str accessors, and the character-class tests str.isspace / str.isalnum use
    # (Unicode database lookups, safe without the GIL).
    unsigned int PyUnicode_KIND(object o)
    void *PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    bint Py_UNICODE_ISSPACE(uint32_t ch) nogil
    bint Py_UNICODE_ISALNUM(uint32_t ch) nogil


cdef extern from "minhash_kernel.h" nogil:
    void llmpipe_minhash_permute(const uint32_t *hashes, size_t count, const uint32_t *a,
                                 const uint32_t *b, uint32_t *mins, size_t num_perm)


# xxHash (https://github.com/Cyan4973/xxHash, spec doc/xxhash_spec.md), little-endian reads.
cdef enum:
    P32_1 = 2654435761U
    P32_2 = 2246822519U
    P32_3 = 3266489917U
    P32_4 = 668265263U
    P32_5 = 374761393U

cdef uint64_t P64_1 = 11400714785074694791ULL
cdef uint64_t P64_2 = 14029467366897019727ULL
cdef uint64_t P64_3 = 1609587929392839161ULL
cdef uint64_t P64_4 = 9650029242287828579ULL
cdef uint64_t P64_5 = 2870177450012600261ULL


cdef inline uint32_t _read32(const uint8_t *p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v


cdef inline uint64_t _read64(const uint8_t *p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


cdef inline uint32_t _rotl32(uint32_t x, int r) noexcept nogil:
    return (x << r) | (x >> (32 - r))


cdef inline uint64_t _rotl64(uint64_t x, int r) noexcept nogil:
    return (x << r) | (x >> (64 - r))


cdef inline uint32_t _round32(uint32_t acc, uint32_t lane) noexcept nogil:
    acc += lane * <uint32_t>P32_2
    return _rotl32(acc, 13) * <uint32_t>P32_1


cdef uint32_t _xxh32(const uint8_t *p, size_t n, uint32_t seed) noexcept nogil:
    cdef const uint8_t *end = p + n
    cdef uint32_t v1, v2, v3, v4, h
    if n >= 16:
        v1 = seed + <uint32_t>P32_1 + <uint32_t>P32_2
        v2 = seed + <uint32_t>P32_2
        v3 = seed
        v4 = seed - <uint32_t>P32_1
        while p + 16 <= end:
            v1 = _round32(v1, _read32(p))
            v2 = _round32(v2, _read32(p + 4))
            v3 = _round32(v3, _read32(p + 8))
            v4 = _round32(v4, _read32(p + 12))
            p += 16
        h = _rotl32(v1, 1) + _rotl32(v2, 7) + _rotl32(v3, 12) + _rotl32(v4, 18)
    else:
        h = seed + <uint32_t>P32_5
    h += <uint32_t>n
    while p + 4 <= end:
        h += _read32(p) * <uint32_t>P32_3
        h = _rotl32(h, 17) * <uint32_t>P32_4
        p += 4
    while p < end:
        h += p[0] * <uint32_t>P32_5
        h = _rotl32(h, 11) * <uint32_t>P32_1
        p += 1
    h ^= h >> 15
    h *= <uint32_t>P32_2
    h ^= h >> 13
    h *= <uint32_t>P32_3
    return h ^ (h >> 16)


cdef inline uint64_t _round64(uint64_t acc, uint64_t lane) noexcept nogil:
    acc += lane * P64_2
    return _rotl64(acc, 31) * P64_1


cdef inline uint64_t _merge64(uint64_t acc, uint64_t v) noexcept nogil:
    acc ^= _round64(0, v)
    return acc * P64_1 + P64_4


cdef uint64_t _xxh64(const uint8_t *p, size_t n, uint64_t seed) noexcept nogil:
    cdef const uint8_t *end = p + n
    cdef uint64_t v1, v2, v3, v4, h
    if n >= 32:
        v1 = seed + P64_1 + P64_2
        v2 = seed + P64_2
        v3 = seed
        v4 = seed - P64_1
        while p + 32 <= end:
            v1 = _round64(v1, _read64(p))
            v2 = _round64(v2, _read64(p + 8))
            v3 = _round64(v3, _read64(p + 16))
            v4 = _round64(v4, _read64(p + 24))
            p += 32
        h = _rotl64(v1, 1) + _rotl64(v2, 7) + _rotl64(v3, 12) + _rotl64(v4, 18)
        h = _merge64(_merge64(_merge64(_merge64(h, v1), v2), v3), v4)
    else:
        h = seed + P64_5
    h += <uint64_t>n
    while p + 8 <= end:
        h ^= _round64(0, _read64(p))
        h = _rotl64(h, 27) * P64_1 + P64_4
        p += 8
    if p + 4 <= end:
        h ^= <uint64_t>_read32(p) * P64_1
        h = _rotl64(h, 23) * P64_2 + P64_3
        p += 4
    while p < end:
        h ^= p[0] * P64_5
        h = _rotl64(h, 11) * P64_1
        p += 1
    h ^= h >> 33
    h *= P64_2
    h ^= h >> 29
    h *= P64_3
    return h ^ (h >> 32)


cdef inline uint32_t _fmix32(uint32_t h) noexcept nogil:
    # MurmurHash3's finalizer: datasketch's affine32 scheme pre-mixes every input hash with it.
    h ^= h >> 16
    h *= 0x85EBCA6BU
    h ^= h >> 13
    h *= 0xC2B2AE35U
    return h ^ (h >> 16)


cdef enum:
    _OTHER = 0
    _SPACE = 1
    _ALNUM = 2

cdef uint8_t _ASCII_CLASS[128]
for _c in range(128):
    _ASCII_CLASS[_c] = _SPACE if chr(_c).isspace() else _ALNUM if chr(_c).isalnum() else _OTHER


ctypedef fused char_t:
    # PEP 393 storage: one specialization per str kind, so the loop reads plain arrays.
    uint8_t
    uint16_t
    uint32_t


cdef Py_ssize_t _normalize(const char_t *data, Py_ssize_t length, uint8_t *out,
                           Py_ssize_t *starts, Py_ssize_t *ends, Py_ssize_t *nbytes) noexcept nogil:
    """Words of ``data`` as UTF-8 joined by single spaces into ``out``; return the word count.

    A word is a whitespace-separated token with every non-alphanumeric character removed
    (str.split / str.isalnum semantics); tokens left empty vanish.
    """
    cdef Py_ssize_t i, n = 0, nwords = 0
    cdef uint32_t c  # not Py_UCS4, which Cython would treat as a Python character
    cdef uint8_t cls
    cdef bint in_word = False
    for i in range(length):
        c = data[i]
        # ASCII, nearly all of web text, by table instead of two Unicode database calls.
        cls = _ASCII_CLASS[c] if c < 128 else (
            _SPACE if Py_UNICODE_ISSPACE(c) else _ALNUM if Py_UNICODE_ISALNUM(c) else _OTHER)
        if cls == _SPACE:
            if in_word:
                ends[nwords] = n
                nwords += 1
                in_word = False
            continue
        if cls == _OTHER:
            continue
        if not in_word:
            if nwords:
                out[n] = 32  # the single space between words
                n += 1
            starts[nwords] = n
            in_word = True
        if c < 0x80:
            out[n] = <uint8_t>c
            n += 1
        elif c < 0x800:
            out[n] = <uint8_t>(0xC0 | (c >> 6))
            out[n + 1] = <uint8_t>(0x80 | (c & 0x3F))
            n += 2
        elif c < 0x10000:
            out[n] = <uint8_t>(0xE0 | (c >> 12))
            out[n + 1] = <uint8_t>(0x80 | ((c >> 6) & 0x3F))
            out[n + 2] = <uint8_t>(0x80 | (c & 0x3F))
            n += 3
        else:
            out[n] = <uint8_t>(0xF0 | (c >> 18))
            out[n + 1] = <uint8_t>(0x80 | ((c >> 12) & 0x3F))
            out[n + 2] = <uint8_t>(0x80 | ((c >> 6) & 0x3F))
            out[n + 3] = <uint8_t>(0x80 | (c & 0x3F))
            n += 4
    if in_word:
        ends[nwords] = n
        nwords += 1
    nbytes[0] = n
    return nwords


cdef Py_ssize_t _signature(const uint8_t *text, const Py_ssize_t *starts, const Py_ssize_t *ends,
                           Py_ssize_t nwords, Py_ssize_t ngram, uint32_t *hashes, const uint32_t *a,
                           const uint32_t *b, uint32_t *mins, Py_ssize_t num_perm) noexcept nogil:
    """MinHash of the word ``ngram``-shingles of normalized ``text`` into ``mins``; return their count.

    Words are joined by single spaces, so shingle i is the byte range from the start of word i
    to the end of word i + ngram - 1. Fewer words than ``ngram`` make one shingle of them all.
    ``hashes`` is scratch space for one hash per word.
    """
    cdef Py_ssize_t i, p, last, count
    for p in range(num_perm):
        mins[p] = 0xFFFFFFFFU
    if nwords == 0:
        return 0
    count = nwords - ngram + 1 if nwords >= ngram else 1
    for i in range(count):
        last = i + ngram - 1 if nwords >= ngram else nwords - 1
        hashes[i] = _fmix32(_xxh32(text + starts[i], ends[last] - starts[i], 0))
    llmpipe_minhash_permute(hashes, count, a, b, mins, num_perm)
    return count


def signatures(list texts, const uint32_t[::1] a not None, const uint32_t[::1] b not None,
               Py_ssize_t ngram):
    """MinHash signatures of already case-folded ``texts`` (see llmpipe.data.dedup.signatures).

    Returns (signatures uint32[n, num_perm], exact xxh64 of the normalized UTF-8 text uint64[n],
    shingle counts uint32[n]).
    """
    cdef Py_ssize_t n = len(texts), num_perm = a.shape[0], d, length, nwords, nbytes, cap = 0
    if num_perm < 1 or b.shape[0] != num_perm:
        raise ValueError(f"need equal, non-empty permutation arrays, got {num_perm} and {b.shape[0]}")
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")
    sigs = np.empty((n, num_perm), dtype=np.uint32)
    exact = np.empty(n, dtype=np.uint64)
    counts = np.empty(n, dtype=np.uint32)
    cdef uint32_t[:, ::1] sig_view = sigs
    cdef uint64_t[::1] exact_view = exact
    cdef uint32_t[::1] count_view = counts
    cdef uint8_t *buf = NULL
    cdef Py_ssize_t *starts = NULL
    cdef Py_ssize_t *ends = NULL
    cdef uint32_t *hashes = NULL
    cdef int kind
    cdef const void *data
    try:
        for d in range(n):
            text = texts[d]
            if type(text) is not str:
                raise TypeError(f"text {d} is {type(text).__name__}, not str")
            length = PyUnicode_GET_LENGTH(text)
            if length + 1 > cap:
                # A code point takes at most 4 UTF-8 bytes; a word needs one char at least.
                cap = 2 * length + 1
                buf = <uint8_t *>_grow(buf, 4 * cap)
                starts = <Py_ssize_t *>_grow(starts, cap * sizeof(Py_ssize_t))
                ends = <Py_ssize_t *>_grow(ends, cap * sizeof(Py_ssize_t))
                hashes = <uint32_t *>_grow(hashes, cap * sizeof(uint32_t))
            kind = PyUnicode_KIND(text)
            data = PyUnicode_DATA(text)
            with nogil:
                if kind == 1:
                    nwords = _normalize(<const uint8_t *>data, length, buf, starts, ends, &nbytes)
                elif kind == 2:
                    nwords = _normalize(<const uint16_t *>data, length, buf, starts, ends, &nbytes)
                else:
                    nwords = _normalize(<const uint32_t *>data, length, buf, starts, ends, &nbytes)
                exact_view[d] = _xxh64(buf, nbytes, 0)
                count_view[d] = <uint32_t>_signature(buf, starts, ends, nwords, ngram, hashes,
                                                     &a[0], &b[0], &sig_view[d, 0], num_perm)
    finally:
        free(buf)
        free(starts)
        free(ends)
        free(hashes)
    return sigs, exact, counts


cdef void *_grow(void *ptr, size_t size) except NULL:
    # On failure ``ptr`` stays valid; the caller's finally frees it.
    cdef void *new = realloc(ptr, size)
    if new == NULL:
        raise MemoryError(f"cannot allocate {size} bytes")
    return new


def permute_min(const uint32_t[::1] hashes not None, const uint32_t[::1] a not None,
                const uint32_t[::1] b not None):
    """The MinHash signature (uint32[num_perm]) of precomputed 32-bit shingle hashes."""
    cdef Py_ssize_t i, num_perm = a.shape[0]
    if num_perm < 1 or b.shape[0] != num_perm:
        raise ValueError(f"need equal, non-empty permutation arrays, got {num_perm} and {b.shape[0]}")
    mixed = np.empty(hashes.shape[0], dtype=np.uint32)
    mins = np.full(num_perm, 0xFFFFFFFF, dtype=np.uint32)
    cdef uint32_t[::1] mixed_view = mixed
    cdef uint32_t[::1] view = mins
    with nogil:
        for i in range(hashes.shape[0]):
            mixed_view[i] = _fmix32(hashes[i])
        if hashes.shape[0]:
            llmpipe_minhash_permute(&mixed_view[0], hashes.shape[0], &a[0], &b[0], &view[0], num_perm)
    return mins


def xxh32(const uint8_t[::1] data not None, uint32_t seed=0) -> int:
    """XXH32 of bytes (equals ``xxhash.xxh32_intdigest``)."""
    return _xxh32(&data[0] if data.shape[0] else NULL, data.shape[0], seed)


def xxh64(const uint8_t[::1] data not None, uint64_t seed=0) -> int:
    """XXH64 of bytes (equals ``xxhash.xxh64_intdigest``)."""
    return _xxh64(&data[0] if data.shape[0] else NULL, data.shape[0], seed)
