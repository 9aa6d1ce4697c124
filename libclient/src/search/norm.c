/* Keyword normalisation NV = 1 (norm.h, spec §1). */
#include "search/norm.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "search/kwtable.h"

#define NORM_OPTIONS                                                                    \
    (UTF8PROC_STABLE | UTF8PROC_COMPAT | UTF8PROC_COMPOSE | UTF8PROC_CASEFOLD |         \
     UTF8PROC_IGNORE)

static bool is_word(utf8proc_int32_t cp)
{
    switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
        return true;
    default:
        return false;
    }
}

/* Scripts written without spaces between words (Han, kana, Hangul and their
 * compatibility and extension blocks): indexed as bigrams because there is
 * no word boundary to split on. Hangul is included although Korean uses
 * spaces, since its particles attach to the word ("서울에" = Seoul + at). */
static bool is_cjk(utf8proc_int32_t cp)
{
    static const struct { utf8proc_int32_t lo, hi; } r[] = {
        {0x1100, 0x11FF}, {0x2E80, 0x2FFF}, {0x3040, 0x30FF}, {0x3130, 0x318F},
        {0x31F0, 0x31FF}, {0x3400, 0x4DBF}, {0x4E00, 0x9FFF}, {0xA960, 0xA97F},
        {0xAC00, 0xD7FF}, {0xF900, 0xFAFF}, {0xFF66, 0xFF9F}, {0x20000, 0x3FFFF},
    };
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
        if (cp >= r[i].lo && cp <= r[i].hi)
            return true;
    return false;
}

typedef struct collector {
    sr_sse_kwtable seen;
    size_t max;
} collector;

/* Encodes cps[0..n) as one keyword, cut at the last code-point boundary
 * within SR_SSE_KEYWORD_MAX bytes, and records it if it is new and the
 * cap is not reached. */
static int emit(collector *c, const utf8proc_int32_t *cps, size_t n)
{
    unsigned char kw[SR_SSE_KEYWORD_MAX + 4];
    size_t len = 0, id;
    bool added;
    int rc;

    for (size_t i = 0; i < n; i++) {
        unsigned char enc[4];
        utf8proc_ssize_t k = utf8proc_encode_char(cps[i], enc);
        if (len + (size_t)k > SR_SSE_KEYWORD_MAX)
            break;
        memcpy(kw + len, enc, (size_t)k);
        len += (size_t)k;
    }
    rc = sr_sse_kwtable_intern(&c->seen, (const char *)kw, len, &id, &added);
    sodium_memzero(kw, sizeof kw);
    return rc;
}

/* Step 2: splits the normalised code points into runs and emits keywords
 * until the cap is reached. */
static int tokenise(collector *c, const utf8proc_int32_t *cps, size_t n)
{
    size_t i = 0;
    int rc;

    while (i < n && c->seen.n < c->max) {
        if (!is_word(cps[i])) {
            i++;
            continue;
        }
        bool cjk = is_cjk(cps[i]);
        size_t j = i + 1;
        while (j < n && is_word(cps[j]) && is_cjk(cps[j]) == cjk)
            j++;
        if (!cjk || j - i == 1) {
            if ((rc = emit(c, cps + i, j - i)) != SR_E2E_OK)
                return rc;
        } else {
            for (size_t k = i; k + 1 < j && c->seen.n < c->max; k++)
                if ((rc = emit(c, cps + k, 2)) != SR_E2E_OK)
                    return rc;
        }
        i = j;
    }
    return SR_E2E_OK;
}

/* Copies the table's keywords, in id (= first-occurrence) order, into the
 * caller's structure. */
static int copy_out(sr_sse_keywords *out, const sr_sse_kwtable *t)
{
    if (t->n == 0)
        return SR_E2E_OK;
    out->kw = calloc(t->n, sizeof *out->kw);
    out->len = calloc(t->n, sizeof *out->len);
    if (!out->kw || !out->len)
        return SR_E2E_ERR_NOMEM;
    for (size_t i = 0; i < t->n; i++) {
        out->kw[i] = malloc((size_t)t->ent[i].len + 1);
        if (!out->kw[i])
            return SR_E2E_ERR_NOMEM;
        memcpy(out->kw[i], t->ent[i].kw, t->ent[i].len);
        out->kw[i][t->ent[i].len] = '\0';
        out->len[i] = t->ent[i].len;
        /* Counts only complete copies, so a failure frees exactly these. */
        out->n = i + 1;
    }
    return SR_E2E_OK;
}

int sr_sse_keywords_from_text(sr_sse_keywords *out, const char *text, size_t len,
                              size_t max_keywords)
{
    collector c;
    utf8proc_int32_t *cps = NULL;
    utf8proc_ssize_t ncp = 0;
    int rc = SR_E2E_ERR_INVALID;

    if (!out)
        return SR_E2E_ERR_INVALID;
    memset(out, 0, sizeof *out);
    sr_sse_kwtable_init(&c.seen);
    c.max = max_keywords;
    if ((!text && len) || max_keywords == 0 || len > (size_t)PTRDIFF_MAX)
        goto out;
    rc = SR_E2E_OK;
    if (len == 0)
        goto out;
    /* This is utf8proc_map() without its final re-encoding: decompose (with
     * compatibility, case folding and ignorables) then compose. Doing it
     * here keeps the code points in a buffer we can wipe, and saves
     * decoding the UTF-8 again to walk them. */
    ncp = utf8proc_decompose((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)len, NULL, 0,
                             NORM_OPTIONS);
    if (ncp < 0) {
        rc = ncp == UTF8PROC_ERROR_NOMEM ? SR_E2E_ERR_NOMEM
           : ncp == UTF8PROC_ERROR_OVERFLOW ? SR_E2E_ERR_INVALID
           : SR_E2E_ERR_MALFORMED;
        ncp = 0;
        goto out;
    }
    if (ncp == 0)
        goto out;
    rc = SR_E2E_ERR_NOMEM;
    if ((size_t)ncp > SIZE_MAX / sizeof *cps || !(cps = malloc((size_t)ncp * sizeof *cps))) {
        ncp = 0;
        goto out;
    }
    rc = SR_E2E_ERR_MALFORMED;
    if (utf8proc_decompose((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)len, cps, ncp,
                           NORM_OPTIONS) != ncp)
        goto out;
    utf8proc_ssize_t n = utf8proc_normalize_utf32(cps, ncp, NORM_OPTIONS);
    if (n < 0)
        goto out;
    if ((rc = tokenise(&c, cps, (size_t)n)) != SR_E2E_OK)
        goto out;
    rc = copy_out(out, &c.seen);
out:
    if (cps) {
        sodium_memzero(cps, (size_t)ncp * sizeof *cps);
        free(cps);
    }
    sr_sse_kwtable_free(&c.seen);
    if (rc != SR_E2E_OK)
        sr_sse_keywords_free(out);
    return rc;
}

void sr_sse_keywords_free(sr_sse_keywords *k)
{
    if (!k)
        return;
    for (size_t i = 0; i < k->n; i++) {
        sodium_memzero(k->kw[i], k->len[i]);
        free(k->kw[i]);
    }
    free(k->kw);
    free(k->len);
    memset(k, 0, sizeof *k);
}

bool sr_sse_keywords_contains(const sr_sse_keywords *k, const char *kw, size_t len)
{
    if (!k || !kw)
        return false;
    for (size_t i = 0; i < k->n; i++)
        if (k->len[i] == len && memcmp(k->kw[i], kw, len) == 0)
            return true;
    return false;
}
