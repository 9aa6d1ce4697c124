/* Segment builder: postings grouped by keyword, sorted, sealed (segment.h). */
#include "search/segment.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "search/kwtable.h"

typedef struct posting {
    uint32_t id;  /* kwtable id of the keyword */
    uint64_t seq;
} posting;

/* Keyword ascending, then seq descending: each keyword's run is already
 * in block order. */
static int cmp_posting(const void *a, const void *b)
{
    const posting *x = a, *y = b;
    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    if (x->seq != y->seq)
        return x->seq > y->seq ? -1 : 1;
    return 0;
}

static int cmp_block(const void *a, const void *b)
{
    return memcmp(a, b, SR_SSE_LABEL_BYTES);
}

static size_t pow2_at_least(size_t m)
{
    size_t p = 1;
    while (p < m)
        p <<= 1;
    return p;
}

/* Writes the padded blocks of one keyword's postings p[0..np) (seq
 * descending) at out. */
static int seal_keyword(unsigned char *out, const unsigned char kg[32], uint32_t gen,
                        uint32_t last_batch, uint64_t segment, const sr_sse_kwentry *kw,
                        const posting *p, size_t np, size_t nblocks)
{
    unsigned char t[32], s[32];
    uint64_t seqs[SR_SSE_BLOCK_IDS];
    int rc;

    if ((rc = sr_sse_root(t, kg, gen, (const char *)kw->kw, kw->len)) != SR_E2E_OK)
        goto out;
    sr_sse_leaf(t, t, last_batch);
    sr_sse_segment_key(s, t, segment);
    for (size_t i = 0; i < nblocks; i++) {
        size_t first = i * SR_SSE_BLOCK_IDS, n = 0;
        for (; first + n < np && n < SR_SSE_BLOCK_IDS; n++)
            seqs[n] = p[first + n].seq;
        unsigned char *b = out + i * SR_SSE_SEGMENT_BLOCK_BYTES;
        sr_sse_block_label(b, s, (uint32_t)i);
        if ((rc = sr_sse_block_seal(b + SR_SSE_LABEL_BYTES, s, segment, (uint32_t)i, seqs, n)) !=
            SR_E2E_OK)
            goto out;
    }
out:
    sodium_memzero(t, sizeof t);
    sodium_memzero(s, sizeof s);
    sodium_memzero(seqs, sizeof seqs);
    return rc;
}

/* The one block of a segment without postings (segment.h): count 0 under
 * a random S, so its label and body look like those of any keyword's
 * block, and no keyword's S derives it. */
static int seal_dummy(unsigned char *out, uint64_t segment)
{
    unsigned char s[32];
    randombytes_buf(s, sizeof s);
    sr_sse_block_label(out, s, 0);
    int rc = sr_sse_block_seal(out + SR_SSE_LABEL_BYTES, s, segment, 0, NULL, 0);
    sodium_memzero(s, sizeof s);
    return rc;
}

/* Collects every (keyword id, seq) posting of the docs. */
static int collect(sr_sse_kwtable *tab, posting **out, size_t *np, const sr_sse_doc *docs,
                   size_t ndocs)
{
    size_t total = 0, n = 0;
    posting *p;

    for (size_t d = 0; d < ndocs; d++) {
        if (docs[d].kws.n && (!docs[d].kws.kw || !docs[d].kws.len))
            return SR_E2E_ERR_INVALID;
        if (docs[d].kws.n > SIZE_MAX / sizeof *p - total)
            return SR_E2E_ERR_NOMEM;
        total += docs[d].kws.n;
    }
    if (total == 0)
        return SR_E2E_OK;
    if (!(p = malloc(total * sizeof *p)))
        return SR_E2E_ERR_NOMEM;
    *out = p;
    for (size_t d = 0; d < ndocs; d++) {
        for (size_t k = 0; k < docs[d].kws.n; k++) {
            size_t id;
            bool added;
            int rc = sr_sse_kwtable_intern(tab, docs[d].kws.kw[k], docs[d].kws.len[k], &id, &added);
            if (rc != SR_E2E_OK)
                return rc;
            p[n].id = (uint32_t)id;
            p[n].seq = docs[d].seq;
            *np = ++n;
        }
    }
    return SR_E2E_OK;
}

int sr_sse_segment_build(const unsigned char kg[32], uint32_t gen, uint32_t last_batch,
                         uint64_t segment, const sr_sse_doc *docs, size_t ndocs,
                         unsigned char **blocks, size_t *nblocks)
{
    sr_sse_kwtable tab;
    posting *p = NULL;
    unsigned char *out = NULL;
    size_t np = 0, total = 0;
    int rc = SR_E2E_ERR_INVALID;

    sr_sse_kwtable_init(&tab);
    if (blocks)
        *blocks = NULL;
    if (nblocks)
        *nblocks = 0;
    if (!kg || gen == 0 || last_batch == 0 || (!docs && ndocs) || !blocks || !nblocks)
        goto out;
    if ((rc = collect(&tab, &p, &np, docs, ndocs)) != SR_E2E_OK)
        goto out;
    if (np == 0) {
        rc = SR_E2E_ERR_NOMEM;
        if (!(out = malloc(SR_SSE_SEGMENT_BLOCK_BYTES)) ||
            (rc = seal_dummy(out, segment)) != SR_E2E_OK)
            goto out;
        *blocks = out;
        *nblocks = 1;
        out = NULL;
        goto out;
    }
    qsort(p, np, sizeof *p, cmp_posting);
    /* Count the padded blocks, refusing a posting listed twice (it would
     * break strict descent within or across blocks). */
    rc = SR_E2E_ERR_INVALID;
    for (size_t i = 0, j; i < np; i = j) {
        for (j = i + 1; j < np && p[j].id == p[i].id; j++)
            if (p[j].seq == p[j - 1].seq)
                goto out;
        total += pow2_at_least((j - i + SR_SSE_BLOCK_IDS - 1) / SR_SSE_BLOCK_IDS);
    }
    if (total > UINT32_MAX || total > SIZE_MAX / SR_SSE_SEGMENT_BLOCK_BYTES) {
        rc = SR_E2E_ERR_NOMEM;
        goto out;
    }
    rc = SR_E2E_ERR_NOMEM;
    if (!(out = malloc(total * SR_SSE_SEGMENT_BLOCK_BYTES)))
        goto out;
    size_t at = 0;
    for (size_t i = 0, j; i < np; i = j) {
        for (j = i + 1; j < np && p[j].id == p[i].id; j++)
            ;
        size_t m = pow2_at_least((j - i + SR_SSE_BLOCK_IDS - 1) / SR_SSE_BLOCK_IDS);
        if ((rc = seal_keyword(out + at * SR_SSE_SEGMENT_BLOCK_BYTES, kg, gen, last_batch, segment,
                               &tab.ent[p[i].id], p + i, j - i, m)) != SR_E2E_OK)
            goto out;
        at += m;
    }
    qsort(out, total, SR_SSE_SEGMENT_BLOCK_BYTES, cmp_block);
    *blocks = out;
    *nblocks = total;
    out = NULL;
    rc = SR_E2E_OK;
out:
    /* Postings map keywords to messages: wipe them. */
    if (p) {
        sodium_memzero(p, np * sizeof *p);
        free(p);
    }
    free(out);
    sr_sse_kwtable_free(&tab);
    return rc;
}
