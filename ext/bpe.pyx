"""Compiled core of llmpipe's byte-level BPE: pre-token counting, trainer, encoder, decoder.

Thin wrappers over ext/bpe_core.h that release the GIL around the C work; the Python class
``llmpipe.tokenizer.Tokenizer`` owns the user-facing API. The C code trusts its arguments
(bounds checks are off), so every entry here checks them first and raises ValueError or
TypeError instead: segment offsets (non-decreasing, first >= 0, last <= the buffer), the
class table's length, the byte order, token ids, array types (memoryviews reject None and
wrong dtypes), and objects shared between threads (one writer, or readers, at a time).
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
    void PyObject_GC_UnTrack(void *o)


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

    int BPE_TOO_LONG
    int64_t bpe_check_offsets(const int64_t *off, size_t n, int64_t len)
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
N_CODE_POINTS = 0x110000  # the class table holds one byte per code point


cdef int _check_offsets(const int64_t[::1] offsets, Py_ssize_t length, str what) except -1:
    """Raise ValueError unless 0 <= offsets[0] <= ... <= offsets[-1] <= length (O(n), no GIL)."""
    cdef size_t n = offsets.shape[0]
    cdef int64_t bad
    if n < 1:
        raise ValueError(f"{what} offsets are empty: they need at least one value (0 segments)")
    with nogil:
        bad = bpe_check_offsets(&offsets[0], n, length)
    if bad < 0:
        return 0
    if bad == 0 and offsets[0] < 0:
        raise ValueError(f"{what} offsets[0] = {offsets[0]} is negative")
    if offsets[bad] > length and (bad == 0 or offsets[bad] >= offsets[bad - 1]):
        raise ValueError(f"{what} offsets[{bad}] = {offsets[bad]} is past the end of the {length}-byte buffer")
    raise ValueError(f"{what} offsets decrease: offsets[{bad}] = {offsets[bad]} < offsets[{bad - 1}] = "
                     f"{offsets[bad - 1]}")


cdef int _check_classes(const uint8_t[::1] cls) except -1:
    if cls.shape[0] != N_CODE_POINTS:
        raise ValueError(f"the character class table holds {cls.shape[0]} bytes, not one per code point "
                         f"({N_CODE_POINTS})")
    return 0


cdef int _raise_for(int rc, str what) except -1:
    """Turn a C error code into an exception; 0 is success."""
    if rc == BPE_TOO_LONG:
        raise ValueError(f"{what}: a pre-token is longer than 2 GiB")
    if rc:
        raise MemoryError(what)
    return 0


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
    """Counts of unique pre-tokens (byte strings); one per thread, merged at the end.

    The C work runs without the GIL, so the object guards itself against sharing: while one
    thread adds (or merges) into it, any other use raises RuntimeError, and while threads
    read it (merging it elsewhere, building a Trainer), adding to it does."""
    cdef bmap m
    cdef int writing, reading
    cdef size_t changes  # bumped by every add and merge: items() notices

    cdef int _start_write(self) except -1:
        if self.writing or self.reading:
            raise RuntimeError("PreTokenCounts is in use by another thread; give each thread its own")
        self.writing = 1
        self.changes += 1
        return 0

    cdef int _start_read(self) except -1:
        if self.writing:
            raise RuntimeError("PreTokenCounts is being added to by another thread")
        self.reading += 1
        return 0

    def __cinit__(self):
        if bmap_init(&self.m, 1 << 16):
            raise MemoryError("pre-token counts")

    def __dealloc__(self):
        bmap_free(&self.m)

    def add(self, const uint8_t[::1] buf not None, const int64_t[::1] offsets not None, bint split,
            const uint8_t[::1] cls not None):
        """Count the pre-tokens of segments buf[offsets[k]:offsets[k+1]] (split with the
        GPT-4 splitter, whose class table `cls` has one byte per code point), or each segment
        as one pre-token (split=False)."""
        _check_offsets(offsets, buf.shape[0], "pre-token")
        _check_classes(cls)
        cdef size_t nseg = offsets.shape[0] - 1
        cdef int rc
        self._start_write()
        try:
            with nogil:
                rc = bpe_count(&self.m, _ptr(buf), &offsets[0], nseg, split, &cls[0])
        finally:
            self.writing = 0
        _raise_for(rc, "pre-token counts")

    def merge(self, PreTokenCounts other not None):
        """Add other's counts into these (other may be self: then every count doubles)."""
        cdef int rc
        self._start_write()
        if other is not self:
            try:
                other._start_read()
            except BaseException:
                self.writing = 0
                raise
        try:
            with nogil:
                rc = bmap_add_all(&self.m, &other.m)
        finally:
            self.writing = 0
            if other is not self:
                other.reading -= 1
        _raise_for(rc, "pre-token counts")

    def __len__(self):
        return self.m.n

    def items(self):
        """(pre-token bytes, count) pairs, in no particular order."""
        cdef size_t i
        cdef size_t changes = self.changes
        cdef bmap_entry *e
        for i in range(self.m.cap):  # a writer must take the GIL to start: checked each step
            if self.changes != changes or self.writing:
                raise RuntimeError("PreTokenCounts changed during items()")
            e = &self.m.t[i]
            if e.hash:
                yield (<const char *>self.m.keys.a)[e.off:e.off + e.len], e.val


cdef class Trainer:
    """Learns merges from pre-token counts; run() in chunks so a progress bar can advance."""
    cdef bpe_trainer *t
    cdef int running  # run() releases the GIL: a second thread may not run or read meanwhile

    def __cinit__(self, PreTokenCounts counts not None, const uint32_t[::1] byte_order not None):
        if byte_order.shape[0] != 256:
            raise ValueError(f"byte_order must hold 256 keys, not {byte_order.shape[0]}")
        cdef int seen[256]
        cdef int b
        for b in range(256):
            seen[b] = 0
        for b in range(256):
            if byte_order[b] >= 256 or seen[byte_order[b]]:
                raise ValueError(f"byte_order must be a permutation of 0..255 (byte_order[{b}] = {byte_order[b]})")
            seen[byte_order[b]] = 1
        counts._start_read()
        try:
            with nogil:
                self.t = bpe_trainer_new(&counts.m, &byte_order[0])
        finally:
            counts.reading -= 1
        if self.t == NULL:
            raise MemoryError("BPE trainer")

    def __dealloc__(self):
        bpe_trainer_free(self.t)

    cdef int _claim(self) except -1:
        if self.running:
            raise RuntimeError("this Trainer is running in another thread")
        self.running = 1
        return 0

    def run(self, Py_ssize_t todo):
        """Learn up to `todo` more merges; return the number learned so far."""
        cdef int64_t done
        if todo < 0:
            raise ValueError(f"todo = {todo} merges is negative")
        self._claim()
        try:
            with nogil:
                done = bpe_trainer_run(self.t, todo)
        finally:
            self.running = 0
        if done < 0:
            raise MemoryError("BPE trainer")
        return done

    def merges(self):
        """The learned merges as an [n, 2] uint32 array of (left id, right id)."""
        if self.running:
            raise RuntimeError("this Trainer is running in another thread")
        out = np.empty((self.t.nmerges, 2), dtype=np.uint32)
        cdef uint32_t[:, ::1] view = out
        if self.t.nmerges:
            memcpy(&view[0, 0], self.t.merges, self.t.nmerges * 8)
        return out


cdef class Encoder:
    """Token bytes -> ids with merge ranks in a C hash table and a per-process piece cache."""
    cdef bpe_encoder *e
    cdef const uint8_t[::1] cls  # the class table, held (its buffer exported) as long as the encoder
    cdef list id_objs  # one int object per id, shared by every list id_lists returns

    def __cinit__(self, const uint8_t[::1] tokens not None, const int64_t[::1] offsets not None,
                  Py_ssize_t n_ordinary, const uint8_t[::1] cls not None):
        """Token k is tokens[offsets[k]:offsets[k+1]]; the first n_ordinary are ordinary
        (id = merge rank), the rest special; cls is the splitter's class table."""
        _check_offsets(offsets, tokens.shape[0], "token")
        _check_classes(cls)
        if <size_t>offsets.shape[0] - 1 >= 0xFFFFFFFF:
            raise ValueError(f"{offsets.shape[0] - 1} tokens do not fit uint32 ids")
        cdef uint32_t n_tokens = offsets.shape[0] - 1
        if n_ordinary < 0 or n_ordinary > n_tokens:
            raise ValueError(f"n_ordinary = {n_ordinary} is not in [0, {n_tokens}] (the tokens)")
        cdef int64_t bad = -1
        self.cls = cls
        with nogil:
            self.e = bpe_encoder_new(_ptr(tokens), &offsets[0], n_tokens, <uint32_t>n_ordinary, &cls[0], &bad)
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

    def encode(self, const uint8_t[::1] buf not None, const int64_t[::1] offsets not None, bint split):
        """Encode segments buf[offsets[k]:offsets[k+1]]; return (ids uint32, ends int64)."""
        _check_offsets(offsets, buf.shape[0], "segment")
        cdef size_t nseg = offsets.shape[0] - 1
        cdef u32buf out = u32buf(NULL, 0, 0)
        cdef int rc
        ends = np.empty(nseg, dtype=np.int64)
        cdef int64_t[::1] ends_view = ends
        try:
            with nogil:
                rc = bpe_encode(self.e, _ptr(buf), &offsets[0], nseg, split, &out,
                                &ends_view[0] if nseg else NULL)
            _raise_for(rc, "BPE encode")
            return _ids_array(&out), ends
        finally:
            free(out.a)

    def encode_batch(self, list texts not None, Py_ssize_t chunk_chars, Py_ssize_t num_threads):
        """One list of ids per str (GPT-4 split), on `num_threads` threads, this one included
        (fewer than 1 means this one alone, more than 65 are 65).

        Worker threads (plain C, never needing the GIL) and this thread encode chunks of about
        `chunk_chars` code points, UTF-8 conversion included, reading the strs in place (the
        list keeps them alive); this thread alone makes the Python lists, chunk by chunk in
        order, and encodes untaken chunks whenever the next one is not done yet."""
        if chunk_chars < 0:
            raise ValueError(f"chunk_chars = {chunk_chars} is negative")
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
                rc = bpe_batch_init(&b, self.e, views, n, <size_t>chunk_chars)
                inited = True
                if rc == 0:
                    started = bpe_batch_start(&b, tids, <int>min(max(num_threads - 1, 0), 64))
            if rc:
                raise MemoryError("BPE encode")
            result = PyList_New(<Py_ssize_t>n)
            for c in range(b.nchunks):
                with nogil:
                    rc = bpe_batch_wait(&b, c)
                _raise_for(rc, "BPE encode")
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
        """result[k] = ids[ends[k-1]:ends[k]] as a list for lo <= k < hi (ends restart at lo).

        The lists hold only ints, so no reference cycle: they are left untracked by the cycle
        collector, which would otherwise walk every id of every list at each collection that
        creating tens of thousands of lists triggers (~40% of encode_batch's time). The one
        cost: a caller who puts such a list inside itself makes a cycle only it can break."""
        cdef size_t k, j, start = 0
        cdef PyObject *item
        for k in range(lo, hi):
            seg = PyList_New(<Py_ssize_t>(ends[k] - start))
            PyObject_GC_UnTrack(<PyObject *>seg)
            for j in range(start, <size_t>ends[k]):
                item = PyList_GET_ITEM(self.id_objs, ids[j])
                Py_INCREF(item)
                PyList_SET_ITEM(seg, j - start, item)
            start = ends[k]
            Py_INCREF(<PyObject *>seg)
            PyList_SET_ITEM(result, k, <PyObject *>seg)
        return 0

    def id_lists(self, const uint32_t[::1] ids not None, const int64_t[::1] ends not None):
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

    def decode(self, const int64_t[::1] ids not None):
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
