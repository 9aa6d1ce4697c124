/* Keyword -> dense id table with linear probing (kwtable.h). */
#include "search/kwtable.h"

#include <stdlib.h>
#include <string.h>

void sr_sse_kwtable_init(sr_sse_kwtable *t)
{
    memset(t, 0, sizeof *t);
    randombytes_buf(t->hkey, sizeof t->hkey);
}

void sr_sse_kwtable_free(sr_sse_kwtable *t)
{
    if (!t)
        return;
    if (t->ent)
        sodium_memzero(t->ent, t->cap * sizeof *t->ent);
    free(t->ent);
    free(t->slots);
    sodium_memzero(t, sizeof *t);
}

/* Doubles the entry array. realloc would leave the old copy of the
 * keywords unwiped in freed memory, so copy and wipe by hand. */
static int grow_entries(sr_sse_kwtable *t)
{
    size_t cap = t->cap ? 2 * t->cap : 16;
    sr_sse_kwentry *ent;

    if (cap > SIZE_MAX / sizeof *ent)
        return SR_E2E_ERR_NOMEM;
    ent = malloc(cap * sizeof *ent);
    if (!ent)
        return SR_E2E_ERR_NOMEM;
    if (t->n) {
        memcpy(ent, t->ent, t->n * sizeof *ent);
        sodium_memzero(t->ent, t->cap * sizeof *t->ent);
    }
    free(t->ent);
    t->ent = ent;
    t->cap = cap;
    return SR_E2E_OK;
}

/* Doubles the slot array and reinserts every id from its stored hash. */
static int grow_slots(sr_sse_kwtable *t)
{
    size_t nslots = t->slots ? 2 * (t->mask + 1) : 32;
    uint32_t *slots;

    if (nslots > SIZE_MAX / sizeof *slots)
        return SR_E2E_ERR_NOMEM;
    slots = calloc(nslots, sizeof *slots);
    if (!slots)
        return SR_E2E_ERR_NOMEM;
    for (size_t id = 0; id < t->n; id++) {
        size_t s = (size_t)t->ent[id].hash & (nslots - 1);
        while (slots[s])
            s = (s + 1) & (nslots - 1);
        slots[s] = (uint32_t)(id + 1);
    }
    free(t->slots);
    t->slots = slots;
    t->mask = nslots - 1;
    return SR_E2E_OK;
}

int sr_sse_kwtable_intern(sr_sse_kwtable *t, const char *kw, size_t len, size_t *id,
                          bool *added)
{
    unsigned char h8[crypto_shorthash_BYTES];
    uint64_t h = 0;
    size_t s;
    int rc;

    if (!t || !kw || !id || !added || len == 0 || len > SR_SSE_KEYWORD_MAX)
        return SR_E2E_ERR_INVALID;
    crypto_shorthash(h8, (const unsigned char *)kw, len, t->hkey);
    for (size_t i = 0; i < sizeof h8; i++)
        h = h << 8 | h8[i];
    if (t->slots) {
        for (s = (size_t)h & t->mask; t->slots[s]; s = (s + 1) & t->mask) {
            const sr_sse_kwentry *e = &t->ent[t->slots[s] - 1];
            if (e->hash == h && e->len == len && memcmp(e->kw, kw, len) == 0) {
                *id = t->slots[s] - 1;
                *added = false;
                return SR_E2E_OK;
            }
        }
    }
    if (t->n >= UINT32_MAX - 1)
        return SR_E2E_ERR_INVALID;
    /* Keep the load at most 1/2 so a miss ends after a short chain. */
    if (!t->slots || 2 * (t->n + 1) > t->mask + 1) {
        if ((rc = grow_slots(t)) != SR_E2E_OK)
            return rc;
    }
    if (t->n == t->cap && (rc = grow_entries(t)) != SR_E2E_OK)
        return rc;
    sr_sse_kwentry *e = &t->ent[t->n];
    e->hash = h;
    e->len = (uint8_t)len;
    memcpy(e->kw, kw, len);
    for (s = (size_t)h & t->mask; t->slots[s]; s = (s + 1) & t->mask)
        ;
    t->slots[s] = (uint32_t)(t->n + 1);
    *id = t->n++;
    *added = true;
    return SR_E2E_OK;
}
