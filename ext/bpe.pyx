"""Compiled core of llmpipe's byte-level BPE: pre-token counting, trainer, encoder, decoder.

Thin wrappers over ext/bpe_core.h that release the GIL around the C work; the Python class
``llmpipe.tokenizer.Tokenizer`` owns validation and the user-facing API.
"""
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from cpython.object cimport PyObject

import numpy as np


cdef extern from "Python.h":
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    void *PyUnicode_DATA(object o)
    unsigned int PyUnicode_KIND(object o)
    bint PyUnicode_IS_ASCII(object o)
    object PyList_New(Py_ssize_t n)
    PyObject *PyList_GET_ITEM(object lst, Py_ssize_t i)
    void PyList_SET_ITEM(object lst, Py_ssize_t i, PyObject *item)  # steals the reference
    void Py_INCREF(PyObject *o)


cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_t:  # opaque here: only C touches it
        pass


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
    ctypedef struct ucs_text:
        const void *data
        size_t n
        int kind
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
    int ucs_pack(const ucs_text *texts, size_t n, uint8_t **buf, int64_t *off)
    ctypedef struct bpe_batch:
        size_t *bounds
        size_t nchunks
        u32buf *ids
        int64_t *ends
    int bpe_batch_init(bpe_batch *b, bpe_encoder *e, const ucs_text *texts, size_t n, size_t chars)
    void bpe_batch_free(bpe_batch *b)
    int bpe_batch_wait(bpe_batch *b, size_t c)
    int bpe_batch_start(bpe_batch *b, pthread_t *tids, int want)
    void bpe_batch_join(bpe_batch *b, pthread_t *tids, int started)
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


cdef int _view(object text, size_t k, ucs_text *view, list keep) except -1:
    """Point view at text's code points in place (or at its UTF-8, kept in `keep`)."""
    if not isinstance(text, str):
        raise TypeError(f"text {k} is {type(text).__name__}, not str")
    view.kind = PyUnicode_KIND(text)
    if view.kind in (1, 2, 4):
        view.n = PyUnicode_GET_LENGTH(text)
        view.data = PyUnicode_DATA(text)
        if PyUnicode_IS_ASCII(text):
            view.kind = 0  # ASCII is its own UTF-8
    else:  # a legacy str not yet "ready" (kind 0, Python < 3.12): let Python encode it
        data = (<str>text).encode("utf-8", "surrogatepass")
        keep.append(data)
        view.n = len(data)
        view.data = <const char *>data
        view.kind = 0
    return 0


cdef object _ids_array(const u32buf *out):
    """A uint32 numpy copy of the ids in out."""
    ids = np.empty(out.n, dtype=np.uint32)
    cdef uint32_t[::1] view = ids
    if out.n:
        memcpy(&view[0], out.a, out.n * 4)
    return ids


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
    cdef list id_objs  # one int object per id, shared by every list id_lists returns

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
        self.id_objs = list(range(n_tokens))

    def __dealloc__(self):
        if self.e != NULL:
            bpe_encoder_free(self.e)

    def encode(self, const uint8_t[::1] buf, const int64_t[::1] offsets, bint split):
        """Encode segments buf[offsets[k]:offsets[k+1]]; return (ids uint32, ends int64)."""
        cdef size_t nseg = offsets.shape[0] - 1
        cdef u32buf out = u32buf(NULL, 0, 0)
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
            return _ids_array(&out), ends
        finally:
            free(out.a)

    def encode_batch(self, list texts, size_t chunk_chars, int num_threads):
        """One list of ids per str (GPT-4 split), on `num_threads` threads, this one included.

        Worker threads (plain C, never needing the GIL) and this thread encode chunks of about
        `chunk_chars` code points, UTF-8 conversion included, reading the strs in place (the
        list keeps them alive); this thread alone makes the Python lists, chunk by chunk in
        order, and encodes untaken chunks whenever the next one is not done yet."""
        texts = list(texts)  # our own reference to every str the workers read
        cdef size_t n = len(texts), c, k
        cdef ucs_text *views = <ucs_text *>malloc((n + 1) * sizeof(ucs_text))
        cdef pthread_t tids[64]
        cdef int started = 0, rc = 0
        cdef bint inited = False
        cdef bpe_batch b
        cdef list result
        keep = []  # UTF-8 copies of the rare strs not readable in place
        if views == NULL:
            raise MemoryError("BPE encode")
        try:
            for k in range(n):
                _view(texts[k], k, &views[k], keep)
            with nogil:
                rc = bpe_batch_init(&b, self.e, views, n, chunk_chars)
                inited = True
                if rc == 0:
                    started = bpe_batch_start(&b, tids, min(max(num_threads - 1, 0), 64))
            if rc:
                raise MemoryError("BPE encode")
            result = PyList_New(<Py_ssize_t>n)
            for c in range(b.nchunks):
                with nogil:
                    rc = bpe_batch_wait(&b, c)
                if rc:
                    raise MemoryError("BPE encode")
                self._fill_lists(result, b.bounds[c], b.bounds[c + 1], b.ids[c].a, b.ends)
                free(b.ids[c].a)
                b.ids[c].a = NULL
            return result
        finally:
            if inited:
                with nogil:
                    bpe_batch_join(&b, tids, started)
                    bpe_batch_free(&b)
            free(views)

    cdef int _fill_lists(self, list result, size_t lo, size_t hi, const uint32_t *ids,
                         const int64_t *ends) except -1:
        """result[k] = ids[ends[k-1]:ends[k]] as a list for lo <= k < hi (ends restart at lo)."""
        cdef size_t k, j, start = 0
        cdef PyObject *item
        for k in range(lo, hi):
            seg = PyList_New(<Py_ssize_t>(ends[k] - start))
            for j in range(start, <size_t>ends[k]):
                item = PyList_GET_ITEM(self.id_objs, ids[j])
                Py_INCREF(item)
                PyList_SET_ITEM(seg, j - start, item)
            start = ends[k]
            Py_INCREF(<PyObject *>seg)
            PyList_SET_ITEM(result, k, <PyObject *>seg)
        return 0

    def id_lists(self, const uint32_t[::1] ids, const int64_t[::1] ends):
        """Python lists of ids[ends[k-1]:ends[k]], one per segment, as encode() returns them.

        Every list holds the same int object for the same id (made once, with the encoder),
        so building them allocates no ints."""
        cdef size_t nseg = ends.shape[0], k, j
        for k in range(nseg):
            if ends[k] < (ends[k - 1] if k else 0) or ends[k] > ids.shape[0]:
                raise ValueError(f"ends[{k}] = {ends[k]} is out of order or past the ids")
        for j in range(ids.shape[0]):
            if ids[j] >= self.e.n_tokens:
                raise ValueError(f"token id {ids[j]} at position {j} is out of range")
        cdef list result = PyList_New(<Py_ssize_t>nseg)
        if nseg:
            self._fill_lists(result, 0, nseg, &ids[0] if ids.shape[0] else NULL, &ends[0])
        return result

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
