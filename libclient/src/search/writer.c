/* Per-batch index writer with two-phase counters (writer.h). */
#include "search/writer.h"

#include <stdlib.h>
#include <string.h>

#include "search/ggm.h"
#include "search/kwtable.h"

/* Per keyword, indexed by its kwtable id. */
typedef struct kwstate {
    unsigned char t[32]; /* batch token t_{w,b}: secret */
    uint32_t counter;    /* next unused c */
} kwstate;

struct sr_sse_writer {
    unsigned char kg[32];
    uint32_t gen, batch;
    size_t entries;       /* stored or pending entries in the batch */
    sr_sse_kwtable kws;
    kwstate *st;          /* sodium_malloc'd, st_cap slots */
    size_t st_cap;
    bool pending;
    size_t *pend_ids;     /* ids whose counter the pending message used */
    size_t pend_n, pend_entries;
};

sr_sse_writer *sr_sse_writer_new(const unsigned char kg[32], uint32_t gen, uint32_t batch)
{
    sr_sse_writer *w;

    if (!kg || gen == 0 || batch == 0 || sodium_init() < 0)
        return NULL;
    /* Guarded, locked memory: K_g opens every batch of the generation. */
    w = sodium_malloc(sizeof *w);
    if (!w)
        return NULL;
    memset(w, 0, sizeof *w);
    memcpy(w->kg, kg, 32);
    w->gen = gen;
    w->batch = batch;
    sr_sse_kwtable_init(&w->kws);
    w->pend_ids = calloc(SR_SSE_MESSAGE_ENTRIES, sizeof *w->pend_ids);
    if (!w->pend_ids) {
        sr_sse_writer_free(w);
        return NULL;
    }
    return w;
}

void sr_sse_writer_free(sr_sse_writer *w)
{
    if (!w)
        return;
    sr_sse_kwtable_free(&w->kws);
    sodium_free(w->st); /* sodium_free wipes */
    if (w->pend_ids) {
        sodium_memzero(w->pend_ids, SR_SSE_MESSAGE_ENTRIES * sizeof *w->pend_ids);
        free(w->pend_ids);
    }
    sodium_free(w);
}

uint32_t sr_sse_writer_batch(const sr_sse_writer *w)
{
    return w ? w->batch : 0;
}

/* Makes room for state slot `id` (ids grow one at a time). */
static int grow_state(sr_sse_writer *w, size_t id)
{
    size_t cap;
    kwstate *st;

    if (id < w->st_cap)
        return SR_E2E_OK;
    cap = w->st_cap ? 2 * w->st_cap : 64;
    if (cap > SIZE_MAX / sizeof *st)
        return SR_E2E_ERR_NOMEM;
    st = sodium_malloc(cap * sizeof *st);
    if (!st)
        return SR_E2E_ERR_NOMEM;
    if (w->st)
        memcpy(st, w->st, w->st_cap * sizeof *st);
    sodium_free(w->st);
    w->st = st;
    w->st_cap = cap;
    return SR_E2E_OK;
}

/* Looks up keyword kw, adding it with its batch token if new, and returns
 * its id. Room for a new state slot is made before the insert, so a
 * keyword is never in the table without its state. */
static int keyword_state(sr_sse_writer *w, const char *kw, size_t len, size_t *id)
{
    unsigned char root[32];
    bool added;
    int rc;

    if ((rc = grow_state(w, w->kws.n)) != SR_E2E_OK)
        return rc;
    if ((rc = sr_sse_kwtable_intern(&w->kws, kw, len, id, &added)) != SR_E2E_OK || !added)
        return rc;
    /* Cannot fail: the table accepted the length and new() checked gen. */
    (void)sr_sse_root(root, w->kg, w->gen, kw, len);
    sr_sse_leaf(w->st[*id].t, root, w->batch);
    w->st[*id].counter = 0;
    sodium_memzero(root, sizeof root);
    return SR_E2E_OK;
}

void sr_sse_writer_abort(sr_sse_writer *w)
{
    if (!w || !w->pending)
        return;
    for (size_t i = 0; i < w->pend_n; i++)
        w->st[w->pend_ids[i]].counter--;
    w->entries -= w->pend_entries;
    w->pend_n = 0;
    w->pend_entries = 0;
    w->pending = false;
}

void sr_sse_writer_commit(sr_sse_writer *w)
{
    if (!w || !w->pending)
        return;
    w->pend_n = 0;
    w->pend_entries = 0;
    w->pending = false;
}

int sr_sse_writer_entries(sr_sse_writer *w, const sr_sse_keywords *kws, unsigned char **labels,
                          size_t *n)
{
    unsigned char *out = NULL;
    size_t total;
    int rc = SR_E2E_ERR_INVALID;

    if (labels)
        *labels = NULL;
    if (n)
        *n = 0;
    if (!w || !kws || !labels || !n || w->pending || kws->n > SR_SSE_MESSAGE_ENTRIES ||
        (kws->n && (!kws->kw || !kws->len)))
        return SR_E2E_ERR_INVALID;
    total = kws->n ? (kws->n + 7) / 8 * 8 : 8;
    if (total > SR_SSE_BATCH_ENTRIES - w->entries)
        return SR_E2E_ERR_INVALID;
    if (!(out = malloc(total * SR_SSE_LABEL_BYTES)))
        return SR_E2E_ERR_NOMEM;
    /* Pending from the first counter used, so a failure part-way rolls back
     * through abort. */
    w->pending = true;
    w->pend_n = 0;
    w->pend_entries = 0;
    for (size_t i = 0; i < kws->n; i++) {
        size_t id;
        if ((rc = keyword_state(w, kws->kw[i], kws->len[i], &id)) != SR_E2E_OK)
            goto out;
        sr_sse_label(out + i * SR_SSE_LABEL_BYTES, w->st[id].t, w->st[id].counter);
        w->st[id].counter++;
        w->pend_ids[w->pend_n++] = id;
    }
    randombytes_buf(out + kws->n * SR_SSE_LABEL_BYTES, (total - kws->n) * SR_SSE_LABEL_BYTES);
    /* Fisher-Yates, so a label's position says nothing about whether it is
     * real or which keyword of the message it stands for. */
    for (size_t i = total - 1; i > 0; i--) {
        size_t j = randombytes_uniform((uint32_t)(i + 1));
        unsigned char tmp[SR_SSE_LABEL_BYTES];
        memcpy(tmp, out + i * SR_SSE_LABEL_BYTES, sizeof tmp);
        memcpy(out + i * SR_SSE_LABEL_BYTES, out + j * SR_SSE_LABEL_BYTES, sizeof tmp);
        memcpy(out + j * SR_SSE_LABEL_BYTES, tmp, sizeof tmp);
    }
    w->pend_entries = total;
    w->entries += total;
    *labels = out;
    *n = total;
    out = NULL;
    rc = SR_E2E_OK;
out:
    if (rc != SR_E2E_OK) {
        sr_sse_writer_abort(w);
        free(out);
    }
    return rc;
}
