/* Byte-level BPE in plain C: hash tables, the GPT-4 pre-token splitter, encoder and trainer.
 * Everything here runs without the GIL; ext/bpe.pyx is the thin Python-facing wrapper.
 *
 * Conventions: a token is identified by its id, which is also its merge rank (lower merges
 * first). Functions returning int give 0 on success, -1 when out of memory and BPE_TOO_LONG
 * for a pre-token of more than BPE_MAX_PIECE bytes (merge positions are int32, and pre-token
 * lengths uint32). Callers (ext/bpe.pyx) check every array argument before calling in.
 */
#ifndef LLMPIPE_BPE_CORE_H
#define LLMPIPE_BPE_CORE_H

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BPE_TOO_LONG (-2)
#define BPE_MAX_PIECE ((size_t)INT32_MAX)

/* The first k breaking 0 <= off[0] <= off[1] <= ... <= off[n-1] <= len, or -1 when none
 * does: segment offsets are safe to read buf[off[k]:off[k+1]] with, for every k. */
static int64_t bpe_check_offsets(const int64_t *off, size_t n, int64_t len) {
    int64_t prev = 0;
    for (size_t k = 0; k < n; k++) {
        if (off[k] < prev) return (int64_t)k;
        prev = off[k];
    }
    return n && prev > len ? (int64_t)(n - 1) : -1;
}

/* ------------------------------------------------------------------ hashing */

static inline uint64_t bpe_mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static inline uint64_t bpe_hash(const uint8_t *p, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ ((uint64_t)n * 0x9FB21C651E98DF25ULL);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h = (h ^ v) * 0x9FB21C651E98DF25ULL;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, p, n);
    return bpe_mix(h ^ v) | 1; /* never 0: 0 marks an empty slot */
}

/* ------------------------------------------------------------------ growable arrays */

typedef struct { uint8_t *a; size_t n, cap; } bytebuf;
typedef struct { uint32_t *a; size_t n, cap; } u32buf;

static int grow(void **a, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t cap2 = *cap ? *cap : 16;
    while (cap2 < need) cap2 *= 2;
    void *b = realloc(*a, cap2 * elem);
    if (!b) return -1;
    *a = b;
    *cap = cap2;
    return 0;
}

static inline int u32_push(u32buf *b, uint32_t v) {
    if (b->n == b->cap && grow((void **)&b->a, &b->cap, b->n + 1, 4)) return -1;
    b->a[b->n++] = v;
    return 0;
}

static inline int bytes_append(bytebuf *b, const uint8_t *p, size_t n) {
    if (grow((void **)&b->a, &b->cap, b->n + n, 1)) return -1;
    memcpy(b->a + b->n, p, n);
    b->n += n;
    return 0;
}

/* ------------------------------------------------------------------ bytes -> int64 map */

/* Open addressing with linear probing, grown ×2 past 3/4 load: with well-mixed hashes a
 * lookup stays at a few probes, and tables hold 1.3-2.7 slots per key (not 2-4 as at 1/2),
 * which is what bounds the trainer's peak memory (the pre-token tables). */
static inline int map_full(size_t n, size_t cap) { return 4 * (n + 1) > 3 * cap; }

typedef struct { uint64_t hash, off; uint32_t len; int64_t val; } bmap_entry;
typedef struct { bmap_entry *t; size_t cap, n; bytebuf keys; } bmap;

static int bmap_init(bmap *m, size_t cap) {
    size_t c = 64;
    while (c < cap) c *= 2;
    memset(m, 0, sizeof *m);
    m->t = calloc(c, sizeof(bmap_entry));
    m->cap = c;
    return m->t ? 0 : -1;
}

static void bmap_free(bmap *m) {
    free(m->t);
    free(m->keys.a);
    memset(m, 0, sizeof *m);
}

static void bmap_clear(bmap *m) {
    memset(m->t, 0, m->cap * sizeof(bmap_entry));
    m->n = 0;
    m->keys.n = 0;
}

static inline bmap_entry *bmap_slot(const bmap *m, const uint8_t *p, size_t n, uint64_t h) {
    size_t mask = m->cap - 1, i = h & mask;
    for (;;) {
        bmap_entry *e = &m->t[i];
        if (e->hash == 0) return e;
        if (e->hash == h && e->len == n && memcmp(m->keys.a + e->off, p, n) == 0) return e;
        i = (i + 1) & mask;
    }
}

static inline int64_t *bmap_find(const bmap *m, const uint8_t *p, size_t n, uint64_t h) {
    bmap_entry *e = bmap_slot(m, p, n, h);
    return e->hash ? &e->val : NULL;
}

static int bmap_rehash(bmap *m) {
    size_t cap = m->cap * 2;
    bmap_entry *t = calloc(cap, sizeof(bmap_entry));
    if (!t) return -1;
    for (size_t i = 0; i < m->cap; i++) {
        bmap_entry *e = &m->t[i];
        if (!e->hash) continue;
        size_t j = e->hash & (cap - 1);
        while (t[j].hash) j = (j + 1) & (cap - 1);
        t[j] = *e;
    }
    free(m->t);
    m->t = t;
    m->cap = cap;
    return 0;
}

/* The value slot for key p (created as 0 when missing); NULL when out of memory. */
static inline int64_t *bmap_upsert(bmap *m, const uint8_t *p, size_t n, uint64_t h) {
    bmap_entry *e = bmap_slot(m, p, n, h);
    if (e->hash) return &e->val;
    if (map_full(m->n, m->cap)) {
        if (bmap_rehash(m)) return NULL;
        e = bmap_slot(m, p, n, h);
    }
    size_t off = m->keys.n;
    if (bytes_append(&m->keys, p, n)) return NULL;
    e->hash = h;
    e->off = off;
    e->len = (uint32_t)n;
    e->val = 0;
    m->n++;
    return &e->val;
}

static int bmap_add_all(bmap *dst, const bmap *src) {
    for (size_t i = 0; i < src->cap; i++) {
        const bmap_entry *e = &src->t[i];
        if (!e->hash) continue;
        int64_t *v = bmap_upsert(dst, src->keys.a + e->off, e->len, e->hash);
        if (!v) return -1;
        *v += e->val;
    }
    return 0;
}

/* ------------------------------------------------------------------ uint64 -> int64 map */

#define PMAP_EMPTY UINT64_MAX
typedef struct { uint64_t key; int64_t val; } pmap_entry;
typedef struct { pmap_entry *t; size_t cap, n; } pmap;

static inline uint64_t pair_key(uint32_t l, uint32_t r) { return ((uint64_t)l << 32) | r; }

static int pmap_init(pmap *m, size_t cap) {
    size_t c = 64;
    while (c < cap) c *= 2;
    m->t = malloc(c * sizeof(pmap_entry));
    if (!m->t) return -1;
    memset(m->t, 0xff, c * sizeof(pmap_entry));
    m->cap = c;
    m->n = 0;
    return 0;
}

static void pmap_free(pmap *m) { free(m->t); m->t = NULL; m->cap = m->n = 0; }

static inline pmap_entry *pmap_slot(const pmap *m, uint64_t key) {
    size_t mask = m->cap - 1, i = bpe_mix(key) & mask;
    while (m->t[i].key != key && m->t[i].key != PMAP_EMPTY) i = (i + 1) & mask;
    return &m->t[i];
}

static inline int64_t *pmap_find(const pmap *m, uint64_t key) {
    pmap_entry *e = pmap_slot(m, key);
    return e->key == key ? &e->val : NULL;
}

/* The value slot for key; a new key's value is set to `init`. NULL when out of memory. */
static int64_t *pmap_upsert(pmap *m, uint64_t key, int64_t init) {
    pmap_entry *e = pmap_slot(m, key);
    if (e->key == key) return &e->val;
    if (map_full(m->n, m->cap)) {
        pmap old = *m;
        if (pmap_init(m, old.cap * 2)) { *m = old; return NULL; }
        for (size_t i = 0; i < old.cap; i++)
            if (old.t[i].key != PMAP_EMPTY) *pmap_slot(m, old.t[i].key) = old.t[i];
        m->n = old.n;
        free(old.t);
        e = pmap_slot(m, key);
    }
    e->key = key;
    e->val = init;
    m->n++;
    return &e->val;
}

/* ------------------------------------------------------------------ str -> UTF-8 */

/* A Python str's code points, read in place: kind 1, 2 or 4 bytes per code point (PEP 393),
 * or kind 0 for bytes that are UTF-8 already. */
typedef struct { const void *data; size_t n; int kind; } ucs_text;

static inline uint32_t ucs_at(const ucs_text *t, size_t i) {
    return t->kind == 2 ? ((const uint16_t *)t->data)[i]
         : t->kind == 4 ? ((const uint32_t *)t->data)[i] : ((const uint8_t *)t->data)[i];
}

/* Bytes of t's UTF-8; surrogates take 3 bytes, as Python's "surrogatepass" writes them. */
static size_t ucs_utf8_len(const ucs_text *t) {
    if (t->kind == 0) return t->n;
    size_t len = t->n;
    for (size_t i = 0; i < t->n; i++) {
        uint32_t c = ucs_at(t, i);
        len += (c >= 0x80) + (c >= 0x800) + (c >= 0x10000);
    }
    return len;
}

/* Write t's UTF-8 to out (ucs_utf8_len(t) bytes). */
static void ucs_utf8(const ucs_text *t, uint8_t *out) {
    if (t->kind == 0) { memcpy(out, t->data, t->n); return; }
    for (size_t i = 0; i < t->n; i++) {
        uint32_t c = ucs_at(t, i);
        if (c < 0x80) {
            *out++ = (uint8_t)c;
        } else if (c < 0x800) {
            *out++ = (uint8_t)(0xC0 | (c >> 6));
            *out++ = (uint8_t)(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            *out++ = (uint8_t)(0xE0 | (c >> 12));
            *out++ = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
            *out++ = (uint8_t)(0x80 | (c & 0x3F));
        } else {
            *out++ = (uint8_t)(0xF0 | (c >> 18));
            *out++ = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
            *out++ = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
            *out++ = (uint8_t)(0x80 | (c & 0x3F));
        }
    }
}

/* Concatenated UTF-8 of n texts in *buf (malloc'd) with off[0..n] segment offsets. */
static int ucs_pack(const ucs_text *texts, size_t n, uint8_t **buf, int64_t *off) {
    off[0] = 0;
    for (size_t k = 0; k < n; k++) off[k + 1] = off[k] + (int64_t)ucs_utf8_len(&texts[k]);
    *buf = malloc(off[n] ? (size_t)off[n] : 1);
    if (!*buf) return -1;
    for (size_t k = 0; k < n; k++) ucs_utf8(&texts[k], *buf + off[k]);
    return 0;
}

/* ------------------------------------------------------------------ GPT-4 splitter */

/* Character classes, one byte per code point (table built in Python from the `regex`
 * package, so the fast splitter and the regex fallback agree on Unicode). */
enum { CLS_L = 1, CLS_N = 2, CLS_S = 4 };

/* Decode one code point at s[i]; malformed bytes decode as one byte of class "other". */
static inline uint32_t utf8_at(const uint8_t *s, size_t n, size_t i, size_t *len) {
    uint8_t b = s[i];
    if (b < 0x80) { *len = 1; return b; }
    size_t l = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 0;
    if (l == 0 || i + l > n) { *len = 1; return 0x110000; }
    uint32_t cp = b & (0x7F >> l);
    for (size_t k = 1; k < l; k++) {
        if ((s[i + k] & 0xC0) != 0x80) { *len = 1; return 0x110000; }
        cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    *len = l;
    return cp;
}

static inline uint8_t cls_of(const uint8_t *cls, uint32_t cp) { return cp < 0x110000 ? cls[cp] : 0; }

static inline size_t run_of(const uint8_t *s, size_t n, size_t i, const uint8_t *cls, uint8_t want) {
    size_t l;
    while (i < n && (cls_of(cls, utf8_at(s, n, i, &l)) & want)) i += l;
    return i;
}

static inline int is_other(uint8_t c) { return (c & (CLS_L | CLS_N | CLS_S)) == 0; }

/* End of the pre-token starting at i, exactly as the cl100k pattern
 *   '(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+
 *   |\s++$|\s*[\r\n]|\s+(?!\S)|\s
 * matches it (leftmost alternative wins, as in a backtracking regex engine). */
static size_t gpt4_next(const uint8_t *s, size_t n, size_t i, const uint8_t *cls) {
    size_t l, l2;
    uint32_t c = utf8_at(s, n, i, &l);
    if (c == '\'' && i + 1 < n) {
        uint32_t c2 = utf8_at(s, n, i + 1, &l2);
        uint32_t lo = c2 | 0x20;
        if ((c2 < 0x80 && (lo == 's' || lo == 'd' || lo == 'm' || lo == 't')) || c2 == 0x17F)
            return i + 1 + l2; /* U+017F long s case-folds to s */
        if (i + 2 < n) {
            uint8_t a = s[i + 1] | 0x20, b = s[i + 2] | 0x20;
            if (s[i + 1] < 0x80 && s[i + 2] < 0x80 &&
                ((a == 'l' && b == 'l') || (a == 'v' && b == 'e') || (a == 'r' && b == 'e')))
                return i + 3;
        }
    }
    uint8_t cc = cls_of(cls, c);
    if (cc & CLS_L) return run_of(s, n, i + l, cls, CLS_L);
    if (!(cc & (CLS_L | CLS_N)) && c != '\r' && c != '\n' && i + l < n &&
        (cls_of(cls, utf8_at(s, n, i + l, &l2)) & CLS_L))
        return run_of(s, n, i + l + l2, cls, CLS_L);
    if (cc & CLS_N) {
        size_t j = i + l;
        for (int k = 1; k < 3 && j < n && (cls_of(cls, utf8_at(s, n, j, &l2)) & CLS_N); k++) j += l2;
        return j;
    }
    size_t j = (c == ' ') ? i + 1 : i;
    if (j < n && is_other(cls_of(cls, utf8_at(s, n, j, &l2)))) {
        while (j < n && is_other(cls_of(cls, utf8_at(s, n, j, &l2)))) j += l2;
        while (j < n && (s[j] == '\r' || s[j] == '\n')) j++;
        return j;
    }
    /* c is whitespace: find the run, its last newline and its last character's start */
    size_t k = i, last_nl = 0, last_start = i;
    int has_nl = 0;
    while (k < n && (cls_of(cls, utf8_at(s, n, k, &l2)) & CLS_S)) {
        if (s[k] == '\r' || s[k] == '\n') { has_nl = 1; last_nl = k; }
        last_start = k;
        k += l2;
    }
    if (k == n) return n;
    if (has_nl) return last_nl + 1;
    if (last_start > i) return last_start;
    return i + l;
}

/* ------------------------------------------------------------------ encoder */

#define BPE_CACHE_SLOTS 4
#define BPE_CACHE_MAX_PIECE 64
#define BPE_CACHE_MAX_ENTRIES (1 << 19)

typedef struct {
    pthread_mutex_t mu;
    bmap map;   /* piece bytes -> (offset in ids << 8) | count */
    u32buf ids;
    char pad[64]; /* keeps each slot's counters off its neighbours' cache lines */
} bpe_cache;

typedef struct {
    uint32_t byte_id[256];
    bmap vocab;        /* ordinary token bytes -> id */
    pmap pairs;        /* (left id, right id) -> id of their concatenation */
    uint8_t *tok;      /* bytes of every token (ordinary then special), for decode */
    int64_t *tok_off;  /* n_tokens + 1 offsets into tok */
    uint32_t n_tokens;
    const uint8_t *cls;
    bpe_cache cache[BPE_CACHE_SLOTS];
} bpe_encoder;

typedef struct { uint32_t *id; int32_t *nxt, *prv; uint64_t *heap; size_t cap, hn; } bpe_work;

static void work_free(bpe_work *w) { free(w->id); free(w->nxt); free(w->prv); free(w->heap); memset(w, 0, sizeof *w); }

static int work_reserve(bpe_work *w, size_t n) {
    if (n <= w->cap) return 0;
    size_t c = w->cap ? w->cap : 64;
    while (c < n) c *= 2;
    work_free(w);
    w->id = malloc(c * 4); w->nxt = malloc(c * 4); w->prv = malloc(c * 4); w->heap = malloc(3 * c * 8);
    if (!w->id || !w->nxt || !w->prv || !w->heap) { work_free(w); return -1; }
    w->cap = c;
    return 0;
}

static inline void heap_push(uint64_t *h, size_t *hn, uint64_t v) {
    size_t i = (*hn)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p] <= v) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = v;
}

static inline uint64_t heap_pop(uint64_t *h, size_t *hn) {
    uint64_t top = h[0], v = h[--(*hn)];
    size_t i = 0, n = *hn;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && h[c + 1] < h[c]) c++;
        if (v <= h[c]) break;
        h[i] = h[c];
        i = c;
    }
    if (n) h[i] = v;
    return top;
}

static inline void push_pair(const bpe_encoder *e, bpe_work *w, int32_t i) {
    int32_t j = w->nxt[i];
    if (j < 0) return;
    int64_t *m = pmap_find(&e->pairs, pair_key(w->id[i], w->id[j]));
    if (m) heap_push(w->heap, &w->hn, ((uint64_t)*m << 32) | (uint32_t)i);
}

#define BPE_SMALL_PIECE 64
#define BPE_NO_PAIR UINT32_MAX

/* The id merging pair `key` (which is also its rank), or BPE_NO_PAIR; i is the key's home slot. */
static inline uint32_t pair_rank_at(const pmap *m, uint64_t key, size_t i) {
    size_t mask = m->cap - 1;
    for (;;) {
        uint64_t k = m->t[i].key;
        if (k == key) return (uint32_t)m->t[i].val;
        if (k == PMAP_EMPTY) return BPE_NO_PAIR;
        i = (i + 1) & mask;
    }
}

static inline uint32_t pair_rank(const pmap *m, uint32_t l, uint32_t r) {
    uint64_t key = pair_key(l, r);
    return pair_rank_at(m, key, bpe_mix(key) & (m->cap - 1));
}

/* bpe_piece's rule for pieces of at most BPE_SMALL_PIECE bytes, in arrays on the stack: the
 * rank of every adjacent pair, a scan for the lowest (the first of equals), then only the two
 * pairs beside the merge are looked up again. The first lookups are independent: their table
 * slots (and the whole-piece slot) are prefetched together, so their cache misses overlap. */
static int bpe_piece_small(const bpe_encoder *e, const uint8_t *p, size_t n, uint64_t h, u32buf *out) {
    uint32_t id[BPE_SMALL_PIECE], rank[BPE_SMALL_PIECE];
    size_t slot[BPE_SMALL_PIECE];
    const pmap *pm = &e->pairs;
    size_t mask = pm->cap - 1;
    __builtin_prefetch(&e->vocab.t[h & (e->vocab.cap - 1)]);
    for (size_t i = 0; i < n; i++) id[i] = e->byte_id[p[i]];
    for (size_t i = 0; i + 1 < n; i++) {
        slot[i] = bpe_mix(pair_key(id[i], id[i + 1])) & mask;
        __builtin_prefetch(&pm->t[slot[i]]);
    }
    int64_t *whole = bmap_find(&e->vocab, p, n, h);
    if (whole) return u32_push(out, (uint32_t)*whole);
    for (size_t i = 0; i + 1 < n; i++) rank[i] = pair_rank_at(pm, pair_key(id[i], id[i + 1]), slot[i]);
    size_t m = n; /* parts left: id[0..m-1], rank[k] merges id[k] and id[k+1] */
    while (m > 1) {
        size_t k = 0;
        for (size_t i = 1; i + 1 < m; i++)
            if (rank[i] < rank[k]) k = i;
        if (rank[k] == BPE_NO_PAIR) break;
        id[k] = rank[k];
        memmove(id + k + 1, id + k + 2, (m - k - 2) * sizeof id[0]);
        if (k + 2 < m) memmove(rank + k + 1, rank + k + 2, (m - k - 3) * sizeof rank[0]);
        m--;
        if (k > 0) rank[k - 1] = pair_rank(pm, id[k - 1], id[k]);
        if (k + 1 < m) rank[k] = pair_rank(pm, id[k], id[k + 1]);
    }
    if (grow((void **)&out->a, &out->cap, out->n + m, 4)) return -1;
    memcpy(out->a + out->n, id, m * sizeof id[0]);
    out->n += m;
    return 0;
}

/* BPE of one piece (h: its bpe_hash): repeatedly merge the adjacent pair whose concatenation
 * has the lowest rank, leftmost first on ties (tiktoken's rule); for long pieces a heap with
 * lazy invalidation keeps this O(n log n). A piece that is itself a token is emitted whole,
 * as tiktoken does. */
static int bpe_piece(const bpe_encoder *e, const uint8_t *p, size_t n, uint64_t h, bpe_work *w, u32buf *out) {
    if (n == 1) return u32_push(out, e->byte_id[p[0]]);
    if (n <= BPE_SMALL_PIECE) return bpe_piece_small(e, p, n, h, out);
    if (n > BPE_MAX_PIECE) return BPE_TOO_LONG;
    int64_t *whole = bmap_find(&e->vocab, p, n, h);
    if (whole) return u32_push(out, (uint32_t)*whole);
    if (work_reserve(w, n)) return -1;
    for (size_t i = 0; i < n; i++) {
        w->id[i] = e->byte_id[p[i]];
        w->nxt[i] = i + 1 < n ? (int32_t)(i + 1) : -1;
        w->prv[i] = (int32_t)i - 1;
    }
    w->hn = 0;
    for (size_t i = 0; i + 1 < n; i++) push_pair(e, w, (int32_t)i);
    while (w->hn) {
        uint64_t top = heap_pop(w->heap, &w->hn);
        int32_t i = (int32_t)(top & 0xffffffffu);
        uint32_t merged = (uint32_t)(top >> 32);
        int32_t j = w->nxt[i];
        if (w->id[i] == UINT32_MAX || j < 0) continue;
        int64_t *m = pmap_find(&e->pairs, pair_key(w->id[i], w->id[j]));
        if (!m || (uint32_t)*m != merged) continue; /* stale entry */
        w->id[i] = merged;
        w->id[j] = UINT32_MAX;
        w->nxt[i] = w->nxt[j];
        if (w->nxt[j] >= 0) w->prv[w->nxt[j]] = i;
        if (w->prv[i] >= 0) push_pair(e, w, w->prv[i]);
        push_pair(e, w, i);
    }
    for (int32_t i = 0; i >= 0; i = w->nxt[i])
        if (u32_push(out, w->id[i])) return -1;
    return 0;
}

/* Encode one piece through the cache (h: its bpe_hash, 0 when not computed yet). */
static int cache_piece(const bpe_encoder *e, bpe_cache *c, const uint8_t *p, size_t n, uint64_t h, bpe_work *w,
                       u32buf *out) {
    if (n == 1) return u32_push(out, e->byte_id[p[0]]);
    if (!h && n <= BPE_MAX_PIECE) h = bpe_hash(p, n);
    if (!c || n > BPE_CACHE_MAX_PIECE) return bpe_piece(e, p, n, h, w, out);
    int64_t *hit = bmap_find(&c->map, p, n, h);
    if (hit) {
        size_t off = (size_t)(*hit >> 8), cnt = (size_t)(*hit & 0xff);
        if (grow((void **)&out->a, &out->cap, out->n + cnt, 4)) return -1;
        memcpy(out->a + out->n, c->ids.a + off, cnt * 4);
        out->n += cnt;
        return 0;
    }
    size_t start = out->n;
    int rc = bpe_piece(e, p, n, h, w, out);
    if (rc) return rc;
    if (c->map.n >= BPE_CACHE_MAX_ENTRIES) { bmap_clear(&c->map); c->ids.n = 0; }
    size_t off = c->ids.n, cnt = out->n - start;
    if (grow((void **)&c->ids.a, &c->ids.cap, off + cnt, 4)) return 0; /* cache is optional */
    int64_t *v = bmap_upsert(&c->map, p, n, h);
    if (!v) return 0;
    memcpy(c->ids.a + off, out->a + start, cnt * 4);
    c->ids.n += cnt;
    *v = ((int64_t)off << 8) | (int64_t)cnt;
    return 0;
}

/* A free cache slot (locked), or NULL when every slot is busy: then encode uncached. */
static bpe_cache *cache_acquire(bpe_encoder *e) {
    for (int k = 0; k < BPE_CACHE_SLOTS; k++)
        if (pthread_mutex_trylock(&e->cache[k].mu) == 0) return &e->cache[k];
    return NULL;
}

static void cache_release(bpe_cache *c) { if (c) pthread_mutex_unlock(&c->mu); }

/* Encode segments buf[off[k]:off[k+1]] (k < nseg): split each with the GPT-4 splitter
 * (split=1) or treat each as one pre-token (split=0). ends[k] = ids written so far. */
static int bpe_encode(bpe_encoder *e, const uint8_t *buf, const int64_t *off, size_t nseg, int split,
                      u32buf *out, int64_t *ends) {
    bpe_work w = {0};
    bpe_cache *c = cache_acquire(e);
    int rc = 0;
    for (size_t k = 0; k < nseg && rc == 0; k++) {
        const uint8_t *s = buf + off[k];
        size_t n = (size_t)(off[k + 1] - off[k]);
        if (!split) {
            if (n) rc = cache_piece(e, c, s, n, 0, &w, out);
        } else if (n) {
            /* one piece ahead: its hash is computed, and its cache slot prefetched, while
             * this one is encoded, so cache misses overlap with work */
            size_t i = 0, j = gpt4_next(s, n, 0, e->cls);
            uint64_t h = 0;
            while (rc == 0 && i < n) {
                size_t j2 = j < n ? gpt4_next(s, n, j, e->cls) : n;
                uint64_t h2 = 0;
                if (c && j2 - j > 1 && j2 - j <= BPE_CACHE_MAX_PIECE) {
                    h2 = bpe_hash(s + j, j2 - j);
                    __builtin_prefetch(&c->map.t[h2 & (c->map.cap - 1)]);
                }
                rc = cache_piece(e, c, s + i, j - i, h, &w, out);
                i = j;
                j = j2;
                h = h2;
            }
        }
        ends[k] = (int64_t)out->n;
    }
    cache_release(c);
    work_free(&w);
    return rc;
}

/* ------------------------------------------------------------------ batches on threads */

/* Many texts in chunks of consecutive texts: worker threads and the caller take chunks in
 * order and encode them; the caller waits for chunks in order (encoding untaken ones while
 * it waits) and turns each finished chunk into Python objects, so only it needs the GIL. */
typedef struct {
    bpe_encoder *e;
    const ucs_text *texts;
    size_t *bounds;         /* chunk c holds texts bounds[c] .. bounds[c+1]-1 */
    size_t nchunks;
    u32buf *ids;            /* per chunk */
    int64_t *ends;          /* per text: ids of its chunk up to its end */
    int *state;             /* per chunk: 0 untaken, 1 taken, 2 done, <0 an error code */
    size_t next;            /* first untaken chunk */
    pthread_mutex_t mu;
    pthread_cond_t done;
} bpe_batch;

/* Cut n texts into chunks of about `chars` code points; 0 or -1 when out of memory. */
static int bpe_batch_init(bpe_batch *b, bpe_encoder *e, const ucs_text *texts, size_t n, size_t chars) {
    memset(b, 0, sizeof *b);
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->done, NULL);
    b->e = e;
    b->texts = texts;
    b->bounds = malloc((n + 2) * sizeof(size_t));
    b->ends = malloc((n + 1) * sizeof(int64_t));
    if (!b->bounds || !b->ends) return -1;
    size_t filled = 0;
    b->bounds[0] = 0;
    for (size_t k = 0; k < n; k++) {
        filled += texts[k].n;
        if (filled >= chars || k + 1 == n) { b->bounds[++b->nchunks] = k + 1; filled = 0; }
    }
    b->ids = calloc(b->nchunks + 1, sizeof(u32buf));
    b->state = calloc(b->nchunks + 1, sizeof(int));
    return b->ids && b->state ? 0 : -1;
}

static void bpe_batch_free(bpe_batch *b) {
    if (b->ids)
        for (size_t c = 0; c < b->nchunks; c++) free(b->ids[c].a);
    free(b->ids); free(b->bounds); free(b->ends); free(b->state);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->done);
}

static int batch_take(bpe_batch *b, size_t *c) {
    pthread_mutex_lock(&b->mu);
    int got = b->next < b->nchunks;
    if (got) { *c = b->next++; b->state[*c] = 1; }
    pthread_mutex_unlock(&b->mu);
    return got;
}

static void batch_encode_chunk(bpe_batch *b, size_t c) {
    size_t lo = b->bounds[c], n = b->bounds[c + 1] - lo;
    uint8_t *buf = NULL;
    u32buf ids = {0}; /* local: chunks' buffers share cache lines, and every id moves ids.n */
    int64_t *off = malloc((n + 1) * sizeof(int64_t));
    int rc = !off || ucs_pack(b->texts + lo, n, &buf, off) ? -1
           : bpe_encode(b->e, buf, off, n, 1, &ids, b->ends + lo);
    free(buf);
    free(off);
    pthread_mutex_lock(&b->mu);
    b->ids[c] = ids;
    b->state[c] = rc ? rc : 2;
    pthread_cond_broadcast(&b->done);
    pthread_mutex_unlock(&b->mu);
}

static void *bpe_batch_worker(void *arg) {
    bpe_batch *b = arg;
    size_t c;
    while (batch_take(b, &c)) batch_encode_chunk(b, c);
    return NULL;
}

/* Wait until chunk c is encoded, encoding untaken chunks meanwhile: 0, or chunk c's error
 * code (-1 out of memory, BPE_TOO_LONG). */
static int bpe_batch_wait(bpe_batch *b, size_t c) {
    size_t d;
    for (;;) {
        pthread_mutex_lock(&b->mu);
        int s = b->state[c];
        pthread_mutex_unlock(&b->mu);
        if (s == 2 || s < 0) return s == 2 ? 0 : s;
        if (batch_take(b, &d)) { batch_encode_chunk(b, d); continue; }
        pthread_mutex_lock(&b->mu);
        while (b->state[c] == 1) pthread_cond_wait(&b->done, &b->mu);
        pthread_mutex_unlock(&b->mu);
    }
}

/* Start up to `want` workers; returns how many started (0 is fine: the caller does it all). */
static int bpe_batch_start(bpe_batch *b, pthread_t *tids, int want) {
    int started = 0;
    while (started < want && pthread_create(&tids[started], NULL, bpe_batch_worker, b) == 0) started++;
    return started;
}

/* Let no more chunks start, then wait for the workers. */
static void bpe_batch_join(bpe_batch *b, pthread_t *tids, int started) {
    pthread_mutex_lock(&b->mu);
    b->next = b->nchunks;
    pthread_mutex_unlock(&b->mu);
    for (int k = 0; k < started; k++) pthread_join(tids[k], NULL);
}

static void bpe_encoder_free(bpe_encoder *e) {
    bmap_free(&e->vocab);
    pmap_free(&e->pairs);
    free(e->tok);
    free(e->tok_off);
    for (int k = 0; k < BPE_CACHE_SLOTS; k++) {
        bmap_free(&e->cache[k].map);
        free(e->cache[k].ids.a);
        pthread_mutex_destroy(&e->cache[k].mu);
    }
    free(e);
}

/* Build an encoder from token bytes (ids 0..n_tokens-1, the first n_ordinary are ordinary
 * tokens whose id is their rank). Returns NULL when out of memory; *bad is set to the id
 * of a duplicate ordinary token, or to n_tokens+k when byte k has no single-byte token. */
static bpe_encoder *bpe_encoder_new(const uint8_t *tok, const int64_t *tok_off, uint32_t n_tokens,
                                    uint32_t n_ordinary, const uint8_t *cls, int64_t *bad) {
    bpe_encoder *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    *bad = -1;
    for (int k = 0; k < BPE_CACHE_SLOTS; k++) pthread_mutex_init(&e->cache[k].mu, NULL);
    for (int k = 0; k < BPE_CACHE_SLOTS; k++)
        if (bmap_init(&e->cache[k].map, 1024)) { bpe_encoder_free(e); return NULL; }
    e->cls = cls;
    e->n_tokens = n_tokens;
    size_t total = (size_t)tok_off[n_tokens];
    e->tok = malloc(total ? total : 1);
    e->tok_off = malloc((n_tokens + 1) * sizeof(int64_t));
    if (!e->tok || !e->tok_off || bmap_init(&e->vocab, 2 * (size_t)n_ordinary) ||
        pmap_init(&e->pairs, 4 * (size_t)n_ordinary)) {
        bpe_encoder_free(e);
        return NULL;
    }
    memcpy(e->tok, tok, total);
    memcpy(e->tok_off, tok_off, (n_tokens + 1) * sizeof(int64_t));
    for (int b = 0; b < 256; b++) e->byte_id[b] = UINT32_MAX;
    for (uint32_t t = 0; t < n_ordinary; t++) {
        const uint8_t *p = tok + tok_off[t];
        size_t n = (size_t)(tok_off[t + 1] - tok_off[t]);
        size_t before = e->vocab.n;
        int64_t *v = bmap_upsert(&e->vocab, p, n, bpe_hash(p, n));
        if (!v) { bpe_encoder_free(e); return NULL; }
        if (e->vocab.n == before) { *bad = t; return e; }
        *v = t;
        if (n == 1) e->byte_id[p[0]] = t;
    }
    for (int b = 0; b < 256; b++)
        if (e->byte_id[b] == UINT32_MAX) { *bad = (int64_t)n_tokens + b; return e; }
    /* every split of a token into two tokens is a merge producing it (tiktoken's rule) */
    for (uint32_t t = 0; t < n_ordinary; t++) {
        const uint8_t *p = tok + tok_off[t];
        size_t n = (size_t)(tok_off[t + 1] - tok_off[t]);
        for (size_t k = 1; k < n; k++) {
            int64_t *l = bmap_find(&e->vocab, p, k, bpe_hash(p, k));
            int64_t *r = l ? bmap_find(&e->vocab, p + k, n - k, bpe_hash(p + k, n - k)) : NULL;
            if (!r) continue;
            int64_t *m = pmap_upsert(&e->pairs, pair_key((uint32_t)*l, (uint32_t)*r), t);
            if (!m) { bpe_encoder_free(e); return NULL; }
        }
    }
    return e;
}

/* Concatenated bytes of ids; *bad is set to the first id out of range. */
static int bpe_decode(const bpe_encoder *e, const int64_t *ids, size_t n, bytebuf *out, int64_t *bad) {
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= e->n_tokens) { *bad = (int64_t)i; return 0; }
        const uint8_t *p = e->tok + e->tok_off[ids[i]];
        if (bytes_append(out, p, (size_t)(e->tok_off[ids[i] + 1] - e->tok_off[ids[i]]))) return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ pre-token counting */

/* Add the pre-tokens of each segment to counts (split=1), or each segment whole (split=0). */
static int bpe_count(bmap *counts, const uint8_t *buf, const int64_t *off, size_t nseg, int split,
                     const uint8_t *cls) {
    for (size_t k = 0; k < nseg; k++) {
        const uint8_t *s = buf + off[k];
        size_t n = (size_t)(off[k + 1] - off[k]);
        for (size_t i = 0; i < n;) {
            size_t j = split ? gpt4_next(s, n, i, cls) : n;
            if (j - i > BPE_MAX_PIECE) return BPE_TOO_LONG;
            int64_t *v = bmap_upsert(counts, s + i, j - i, bpe_hash(s + i, j - i));
            if (!v) return -1;
            (*v)++;
            i = j;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ trainer */

typedef struct { int64_t count; uint32_t l, r; int32_t *w; int32_t nw, cap; uint32_t changed; } bpe_pair;
typedef struct { int64_t count; uint32_t kl, kr, l, r; } bpe_qitem;

typedef struct {
    size_t nwords;
    int64_t *woff, *wcount;
    int32_t *wlen;
    uint32_t *sym, *wstamp;
    pmap index;              /* pair key -> index into pairs */
    bpe_pair *pairs;
    size_t npairs, pcap;
    bpe_qitem *q;            /* max-heap: count desc, then (key(l), key(r)) asc */
    size_t qn, qcap;
    uint32_t *tiekey;        /* tie-break key of every id (bytes by a chosen order) */
    size_t tcap;
    uint32_t *changed;
    size_t nchanged, ccap;
    uint32_t stamp, next_id;
    uint32_t *merges;        /* 2 per merge */
    size_t nmerges, mcap;
} bpe_trainer;

static inline int q_less(const bpe_qitem *a, const bpe_qitem *b) { /* a ranks below b */
    if (a->count != b->count) return a->count < b->count;
    if (a->kl != b->kl) return a->kl > b->kl;
    return a->kr > b->kr;
}

static int q_push(bpe_trainer *t, int64_t count, uint32_t l, uint32_t r) {
    if (grow((void **)&t->q, &t->qcap, t->qn + 1, sizeof(bpe_qitem))) return -1;
    bpe_qitem v = {count, t->tiekey[l], t->tiekey[r], l, r};
    size_t i = t->qn++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!q_less(&t->q[p], &v)) break;
        t->q[i] = t->q[p];
        i = p;
    }
    t->q[i] = v;
    return 0;
}

static bpe_qitem q_pop(bpe_trainer *t) {
    bpe_qitem top = t->q[0], v = t->q[--t->qn];
    size_t i = 0, n = t->qn;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && q_less(&t->q[c], &t->q[c + 1])) c++;
        if (!q_less(&v, &t->q[c])) break;
        t->q[i] = t->q[c];
        i = c;
    }
    if (n) t->q[i] = v;
    return top;
}

/* Add d to pair (l, r)'s count in word w; a pair that gained is queued again later. */
static int pair_add(bpe_trainer *t, uint32_t l, uint32_t r, int64_t d, int32_t w) {
    int64_t *ix = pmap_upsert(&t->index, pair_key(l, r), (int64_t)t->npairs);
    if (!ix) return -1;
    if ((size_t)*ix == t->npairs) {
        if (grow((void **)&t->pairs, &t->pcap, t->npairs + 1, sizeof(bpe_pair))) return -1;
        bpe_pair z = {0, l, r, NULL, 0, 0, 0};
        t->pairs[t->npairs++] = z;
    }
    bpe_pair *p = &t->pairs[*ix];
    p->count += d;
    if (d > 0) {
        if (p->nw == 0 || p->w[p->nw - 1] != w) {
            if (p->nw == p->cap) {
                int32_t cap = p->cap ? 2 * p->cap : 4;
                int32_t *a = realloc(p->w, (size_t)cap * 4);
                if (!a) return -1;
                p->w = a;
                p->cap = cap;
            }
            p->w[p->nw++] = w;
        }
        if (p->changed != t->stamp) {
            p->changed = t->stamp;
            if (grow((void **)&t->changed, &t->ccap, t->nchanged + 1, 4)) return -1;
            t->changed[t->nchanged++] = (uint32_t)*ix;
        }
    }
    return 0;
}

static int flush_changed(bpe_trainer *t) {
    for (size_t k = 0; k < t->nchanged; k++) {
        bpe_pair *p = &t->pairs[t->changed[k]];
        if (p->count > 0 && q_push(t, p->count, p->l, p->r)) return -1;
    }
    t->nchanged = 0;
    return 0;
}

static void bpe_trainer_free(bpe_trainer *t) {
    if (!t) return;
    for (size_t i = 0; i < t->npairs; i++) free(t->pairs[i].w);
    free(t->pairs); free(t->woff); free(t->wcount); free(t->wlen); free(t->sym); free(t->wstamp);
    free(t->q); free(t->tiekey); free(t->changed); free(t->merges);
    pmap_free(&t->index);
    free(t);
}

/* A trainer over the pre-token counts (pre-tokens of one byte carry no pairs and are left
 * out). byte_order[b] is byte b's tie-break key; merged tokens' keys are their ids. */
static bpe_trainer *bpe_trainer_new(const bmap *counts, const uint32_t *byte_order) {
    bpe_trainer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    size_t nsym = 0;
    for (size_t i = 0; i < counts->cap; i++)
        if (counts->t[i].hash && counts->t[i].len > 1 && counts->t[i].val > 0) { t->nwords++; nsym += counts->t[i].len; }
    if (t->nwords > (size_t)INT32_MAX) { bpe_trainer_free(t); return NULL; }
    t->woff = malloc((t->nwords + 1) * 8); t->wcount = malloc((t->nwords + 1) * 8);
    t->wlen = malloc((t->nwords + 1) * 4); t->wstamp = calloc(t->nwords + 1, 4);
    t->sym = malloc((nsym + 1) * 4);
    t->tcap = 256;
    t->tiekey = malloc(256 * 4);
    if (!t->woff || !t->wcount || !t->wlen || !t->wstamp || !t->sym || !t->tiekey ||
        pmap_init(&t->index, 1024)) { bpe_trainer_free(t); return NULL; }
    memcpy(t->tiekey, byte_order, 256 * 4);
    t->next_id = 256;
    t->stamp = 1;
    size_t w = 0, at = 0;
    for (size_t i = 0; i < counts->cap; i++) {
        const bmap_entry *e = &counts->t[i];
        if (!e->hash || e->len <= 1 || e->val <= 0) continue;
        t->woff[w] = (int64_t)at; t->wlen[w] = (int32_t)e->len; t->wcount[w] = e->val;
        for (uint32_t k = 0; k < e->len; k++) t->sym[at++] = counts->keys.a[e->off + k];
        for (uint32_t k = 0; k + 1 < e->len; k++)
            if (pair_add(t, t->sym[t->woff[w] + k], t->sym[t->woff[w] + k + 1], e->val, (int32_t)w)) {
                bpe_trainer_free(t); return NULL;
            }
        w++;
    }
    if (flush_changed(t)) { bpe_trainer_free(t); return NULL; }
    return t;
}

/* Merge (a, b) -> id inside word w, left to right, reporting pair-count changes the way
 * Hugging Face's Word::merge does (the left neighbour is already the merged symbol). */
static int merge_word(bpe_trainer *t, int32_t w, uint32_t a, uint32_t b, uint32_t id) {
    uint32_t *s = t->sym + t->woff[w];
    int32_t len = t->wlen[w], r = 0, o = 0;
    int64_t c = t->wcount[w];
    while (r < len) {
        if (r + 1 < len && s[r] == a && s[r + 1] == b) {
            if (o > 0 && (pair_add(t, s[o - 1], a, -c, w) || pair_add(t, s[o - 1], id, c, w))) return -1;
            s[o++] = id;
            r += 2;
            if (r < len && (pair_add(t, b, s[r], -c, w) || pair_add(t, id, s[r], c, w))) return -1;
        } else {
            s[o++] = s[r++];
        }
    }
    t->wlen[w] = o;
    return 0;
}

/* Learn up to `todo` more merges. Returns merges learned so far, or -1 out of memory.
 * The pair with the highest count merges next; ties go to the smallest (key(l), key(r)). */
static int64_t bpe_trainer_run(bpe_trainer *t, size_t todo) {
    while (todo > 0 && t->qn > 0) {
        bpe_qitem top = q_pop(t);
        int64_t *ix = pmap_find(&t->index, pair_key(top.l, top.r));
        bpe_pair *p = &t->pairs[*ix];
        if (p->count != top.count) { /* stale: requeue with its current count */
            if (p->count > 0 && q_push(t, p->count, top.l, top.r)) return -1;
            continue;
        }
        if (top.count < 1) break;
        uint32_t id = t->next_id++;
        if (grow((void **)&t->tiekey, &t->tcap, id + 1, 4) ||
            grow((void **)&t->merges, &t->mcap, 2 * (t->nmerges + 1), 4)) return -1;
        t->tiekey[id] = id;
        t->merges[2 * t->nmerges] = top.l;
        t->merges[2 * t->nmerges + 1] = top.r;
        t->nmerges++;
        t->stamp++;
        int32_t *words = p->w, nw = p->nw;
        p->w = NULL; p->nw = p->cap = 0; /* (l, r) cannot reappear: every new pair holds id */
        for (int32_t k = 0; k < nw; k++) {
            int32_t w = words[k];
            if (t->wstamp[w] == t->stamp) continue;
            t->wstamp[w] = t->stamp;
            if (merge_word(t, w, top.l, top.r, id)) { free(words); return -1; }
        }
        free(words);
        t->pairs[*pmap_find(&t->index, pair_key(top.l, top.r))].count = 0;
        if (flush_changed(t)) return -1;
        todo--;
    }
    return (int64_t)t->nmerges;
}

#endif
