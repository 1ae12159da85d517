"""Compiled core of llmpipe's byte-level BPE: pre-token counting, trainer, encoder, decoder.

Thin wrappers over ext/bpe_core.h that release the GIL around the C work; the Python class
``llmpipe.tokenizer.Tokenizer`` owns validation and the user-facing API.
"""
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free
from libc.string cimport memcpy

import numpy as np


cdef extern from "bpe_core.h" nogil:
    ctypedef struct bytebuf:
        uint8_t *a
        size_t n
        size_t cap
    ctypedef struct u32buf:
        uint32_t *a
        size_t n
        size_t cap
    ctypedef struct bmap_entry:
        uint64_t hash
        uint64_t off
        uint32_t len
        int64_t val
    ctypedef struct bmap:
        bmap_entry *t
        size_t cap
        size_t n
        bytebuf keys
    ctypedef struct bpe_encoder:
        uint32_t n_tokens
    ctypedef struct bpe_trainer:
        uint32_t *merges
        size_t nmerges

    int bmap_init(bmap *m, size_t cap)
    void bmap_free(bmap *m)
    int bmap_add_all(bmap *dst, const bmap *src)
    int bpe_count(bmap *counts, const uint8_t *buf, const int64_t *off, size_t nseg, int split,
                  const uint8_t *cls)
    bpe_encoder *bpe_encoder_new(const uint8_t *tok, const int64_t *tok_off, uint32_t n_tokens,
                                 uint32_t n_ordinary, const uint8_t *cls, int64_t *bad)
    void bpe_encoder_free(bpe_encoder *e)
    int bpe_encode(bpe_encoder *e, const uint8_t *buf, const int64_t *off, size_t nseg, int split,
                   u32buf *out, int64_t *ends)
    int bpe_decode(const bpe_encoder *e, const int64_t *ids, size_t n, bytebuf *out, int64_t *bad)
    bpe_trainer *bpe_trainer_new(const bmap *counts, const uint32_t *byte_order)
    void bpe_trainer_free(bpe_trainer *t)
    int64_t bpe_trainer_run(bpe_trainer *t, size_t todo)


cdef const uint8_t *_EMPTY = b""


cdef inline const uint8_t *_ptr(const uint8_t[::1] buf) noexcept nogil:
    return &buf[0] if buf.shape[0] else _EMPTY


cdef class PreTokenCounts:
    """Counts of unique pre-tokens (byte strings); one per thread, merged at the end."""
    cdef bmap m

    def __cinit__(self):
        if bmap_init(&self.m, 1 << 16):
            raise MemoryError("pre-token counts")

    def __dealloc__(self):
        bmap_free(&self.m)

    def add(self, const uint8_t[::1] buf, const int64_t[::1] offsets, bint split, const uint8_t[::1] cls):
        """Count the pre-tokens of segments buf[offsets[k]:offsets[k+1]] (split with the
        GPT-4 splitter), or each segment as one pre-token (split=False)."""
        cdef size_t nseg = offsets.shape[0] - 1
        cdef int rc
        if offsets.shape[0] < 1 or offsets[nseg] > buf.shape[0]:
            raise ValueError("offsets do not fit the buffer")
        with nogil:
            rc = bpe_count(&self.m, _ptr(buf), &offsets[0], nseg, split, &cls[0])
        if rc:
            raise MemoryError("pre-token counts")

    def merge(self, PreTokenCounts other):
        """Add other's counts into these."""
        cdef int rc
        with nogil:
            rc = bmap_add_all(&self.m, &other.m)
        if rc:
            raise MemoryError("pre-token counts")

    def __len__(self):
        return self.m.n

    def items(self):
        """(pre-token bytes, count) pairs, in no particular order."""
        cdef size_t i
        cdef bmap_entry *e
        for i in range(self.m.cap):
            e = &self.m.t[i]
            if e.hash:
                yield (<const char *>self.m.keys.a)[e.off:e.off + e.len], e.val


cdef class Trainer:
    """Learns merges from pre-token counts; run() in chunks so a progress bar can advance."""
    cdef bpe_trainer *t

    def __cinit__(self, PreTokenCounts counts, const uint32_t[::1] byte_order):
        if byte_order.shape[0] != 256:
            raise ValueError("byte_order must hold 256 keys")
        with nogil:
            self.t = bpe_trainer_new(&counts.m, &byte_order[0])
        if self.t == NULL:
            raise MemoryError("BPE trainer")

    def __dealloc__(self):
        bpe_trainer_free(self.t)

    def run(self, size_t todo):
        """Learn up to `todo` more merges; return the number learned so far."""
        cdef int64_t done
        with nogil:
            done = bpe_trainer_run(self.t, todo)
        if done < 0:
            raise MemoryError("BPE trainer")
        return done

    def merges(self):
        """The learned merges as an [n, 2] uint32 array of (left id, right id)."""
        out = np.empty((self.t.nmerges, 2), dtype=np.uint32)
        cdef uint32_t[:, ::1] view = out
        if self.t.nmerges:
            memcpy(&view[0, 0], self.t.merges, self.t.nmerges * 8)
        return out


cdef class Encoder:
    """Token bytes -> ids with merge ranks in a C hash table and a per-process piece cache."""
    cdef bpe_encoder *e
    cdef object cls  # the class table must outlive the encoder

    def __cinit__(self, const uint8_t[::1] tokens, const int64_t[::1] offsets, uint32_t n_ordinary,
                  cls):
        cdef uint32_t n_tokens = offsets.shape[0] - 1
        cdef int64_t bad = -1
        cdef const uint8_t[::1] table = cls
        self.cls = cls
        with nogil:
            self.e = bpe_encoder_new(_ptr(tokens), &offsets[0], n_tokens, n_ordinary, &table[0], &bad)
        if self.e == NULL:
            raise MemoryError("BPE encoder")
        if bad >= n_tokens:
            raise ValueError(f"vocabulary lacks a single-byte token for byte {bad - n_tokens}")
        if bad >= 0:
            raise ValueError(f"token {bad} repeats the bytes of an earlier token")

    def __dealloc__(self):
        if self.e != NULL:
            bpe_encoder_free(self.e)

    def encode(self, const uint8_t[::1] buf, const int64_t[::1] offsets, bint split):
        """Encode segments buf[offsets[k]:offsets[k+1]]; return (ids uint32, ends int64)."""
        cdef size_t nseg = offsets.shape[0] - 1
        cdef u32buf out = u32buf(NULL, 0, 0)
        cdef uint32_t[::1] ids_view
        cdef int rc
        if offsets.shape[0] < 1 or offsets[nseg] > buf.shape[0]:
            raise ValueError("offsets do not fit the buffer")
        ends = np.empty(nseg, dtype=np.int64)
        cdef int64_t[::1] ends_view = ends
        try:
            with nogil:
                rc = bpe_encode(self.e, _ptr(buf), &offsets[0], nseg, split, &out,
                                &ends_view[0] if nseg else NULL)
            if rc:
                raise MemoryError("BPE encode")
            ids = np.empty(out.n, dtype=np.uint32)
            if out.n:
                ids_view = ids
                memcpy(&ids_view[0], out.a, out.n * 4)
            return ids, ends
        finally:
            free(out.a)

    def decode(self, const int64_t[::1] ids):
        """The concatenated bytes of ids."""
        cdef bytebuf out = bytebuf(NULL, 0, 0)
        cdef int64_t bad = -1
        cdef int rc
        try:
            with nogil:
                rc = bpe_decode(self.e, &ids[0] if ids.shape[0] else NULL, ids.shape[0], &out, &bad)
            if rc:
                raise MemoryError("BPE decode")
            if bad >= 0:
                raise ValueError(f"token id {ids[bad]} at position {bad} is out of range [0, {self.e.n_tokens})")
            return (<const char *>out.a)[:out.n] if out.n else b""
        finally:
            free(out.a)
