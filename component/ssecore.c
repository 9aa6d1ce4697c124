/* The component's share of the encrypted-search derivations (ssecore.h),
 * re-encoded from libsodium rather than linked from libclient/src/search;
 * test_ssecore.c runs the library against this file byte for byte. */
#include "ssecore.h"

#include <sodium.h>
#include <string.h>

static const char LABEL_LEFT[] = "sealroom.sse.v1.ggm.left";
static const char LABEL_RIGHT[] = "sealroom.sse.v1.ggm.right";
static const char LABEL_ENTRY[] = "sealroom.sse.v1.label";
static const char LABEL_SEGMENT[] = "sealroom.sse.v1.segment";
static const char LABEL_BLOCK_LABEL[] = "sealroom.sse.v1.block-label";
static const char LABEL_BLOCK_KEY[] = "sealroom.sse.v1.block-key";

#define PLAIN_BYTES (2 + 8 * SSE_BLOCK_IDS)
#define NONCE_BYTES crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_Static_assert(SSE_BLOCK_BYTES == PLAIN_BYTES + crypto_aead_xchacha20poly1305_ietf_ABYTES,
               "block size");

/* KDF(key, label, in, n): keyed BLAKE2b over lp8(label) ‖ in. Every label
 * here is a constant shorter than 256 bytes and every n is 16 or 32, so it
 * cannot fail. The state holds the keyed chaining value: wiped. */
static void kdf(unsigned char *out, size_t n, const unsigned char key[SSE_KEY_BYTES],
                const char *label, const unsigned char *in, size_t inlen)
{
    crypto_generichash_state st;
    unsigned char l8 = (unsigned char)strlen(label);
    crypto_generichash_init(&st, key, SSE_KEY_BYTES, n);
    crypto_generichash_update(&st, &l8, 1);
    crypto_generichash_update(&st, (const unsigned char *)label, l8);
    if (inlen) crypto_generichash_update(&st, in, inlen);
    crypto_generichash_final(&st, out, n);
    sodium_memzero(&st, sizeof st);
}

static void be32(unsigned char b[4], uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[i] = (unsigned char)(v >> (24 - 8 * i));
}

static void be64(unsigned char b[8], uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (56 - 8 * i));
}

static uint64_t get64(const unsigned char *b)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | b[i];
    return v;
}

bool sse_node_range(unsigned depth, uint32_t prefix, uint64_t *lo, uint64_t *hi)
{
    if (depth > SSE_DEPTH || (uint64_t)prefix >> depth != 0) return false;
    unsigned shift = SSE_DEPTH - depth;
    *lo = (uint64_t)prefix << shift;
    *hi = (((uint64_t)prefix + 1) << shift) - 1;
    return true;
}

void sse_child(unsigned char out[SSE_KEY_BYTES], const unsigned char node[SSE_KEY_BYTES],
               unsigned bit)
{
    unsigned char tmp[SSE_KEY_BYTES];
    kdf(tmp, sizeof tmp, node, bit ? LABEL_RIGHT : LABEL_LEFT, NULL, 0);
    memcpy(out, tmp, sizeof tmp);
    sodium_memzero(tmp, sizeof tmp);
}

static bool node_holds(unsigned depth, uint32_t prefix, uint32_t b)
{
    uint64_t lo, hi;
    return sse_node_range(depth, prefix, &lo, &hi) && b >= lo && b <= hi;
}

/* Bit `level` of b counted from the top: the step from depth `level` to
 * depth level+1. */
static unsigned bit_at(uint32_t b, unsigned level)
{
    return (b >> (SSE_DEPTH - 1 - level)) & 1;
}

bool sse_descend(unsigned char out[SSE_KEY_BYTES], unsigned depth, uint32_t prefix,
                 const unsigned char key[SSE_KEY_BYTES], uint32_t b)
{
    if (!node_holds(depth, prefix, b)) {
        sodium_memzero(out, SSE_KEY_BYTES);
        return false;
    }
    memmove(out, key, SSE_KEY_BYTES);
    for (unsigned level = depth; level < SSE_DEPTH; level++)
        sse_child(out, out, bit_at(b, level));
    return true;
}

bool sse_walk_init(sse_walk *w, unsigned depth, uint32_t prefix,
                   const unsigned char key[SSE_KEY_BYTES])
{
    uint64_t lo, hi;
    if (!sse_node_range(depth, prefix, &lo, &hi)) return false;
    w->depth = depth;
    w->prefix = prefix;
    w->have_last = false;
    w->last = 0;
    memcpy(w->path[depth], key, SSE_KEY_BYTES);
    return true;
}

bool sse_walk_leaf(sse_walk *w, unsigned char out[SSE_KEY_BYTES], uint32_t b)
{
    if (!node_holds(w->depth, w->prefix, b)) {
        sodium_memzero(out, SSE_KEY_BYTES);
        return false;
    }
    /* path[l] is the ancestor of `last` at depth l; it is b's too for every
     * l up to the first bit where they differ (both lie below the node,
     * so that bit is at or below its depth). */
    unsigned from = w->depth;
    if (w->have_last) {
        uint32_t diff = w->last ^ b;
        from = SSE_DEPTH;
        for (unsigned level = w->depth; level < SSE_DEPTH; level++)
            if (bit_at(diff, level)) {
                from = level;
                break;
            }
    }
    for (unsigned level = from; level < SSE_DEPTH; level++)
        sse_child(w->path[level + 1], w->path[level], bit_at(b, level));
    w->last = b;
    w->have_last = true;
    memcpy(out, w->path[SSE_DEPTH], SSE_KEY_BYTES);
    return true;
}

void sse_walk_wipe(sse_walk *w)
{
    sodium_memzero(w, sizeof *w);
}

void sse_label(unsigned char out[SSE_LABEL_BYTES], const unsigned char t[SSE_KEY_BYTES], uint32_t c)
{
    unsigned char in[4];
    be32(in, c);
    kdf(out, SSE_LABEL_BYTES, t, LABEL_ENTRY, in, sizeof in);
}

void sse_segment_key(unsigned char out[SSE_KEY_BYTES], const unsigned char t_last[SSE_KEY_BYTES],
                     uint64_t segment)
{
    unsigned char in[8];
    be64(in, segment);
    kdf(out, SSE_KEY_BYTES, t_last, LABEL_SEGMENT, in, sizeof in);
}

void sse_block_label(unsigned char out[SSE_LABEL_BYTES], const unsigned char s[SSE_KEY_BYTES],
                     uint32_t i)
{
    unsigned char in[4];
    be32(in, i);
    kdf(out, SSE_LABEL_BYTES, s, LABEL_BLOCK_LABEL, in, sizeof in);
}

void sse_block_key(unsigned char out[SSE_KEY_BYTES], const unsigned char s[SSE_KEY_BYTES])
{
    kdf(out, SSE_KEY_BYTES, s, LABEL_BLOCK_KEY, NULL, 0);
}

int sse_block_open(uint64_t seqs[SSE_BLOCK_IDS], size_t *count,
                   const unsigned char block_key[SSE_KEY_BYTES], uint64_t segment, uint32_t i,
                   const unsigned char body[SSE_BLOCK_BYTES])
{
    unsigned char pt[PLAIN_BYTES], nonce[NONCE_BYTES] = {0}, ad[12];
    unsigned long long plen = 0;
    size_t n = 0;
    int rc = SSE_OPEN_DECRYPT;

    *count = 0;
    memset(seqs, 0, SSE_BLOCK_IDS * sizeof *seqs);
    /* (BK, i) is unique per block: a counter nonce, nothing on the wire. */
    be32(nonce + NONCE_BYTES - 4, i);
    be64(ad, segment);
    be32(ad + 8, i);
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(pt, &plen, NULL, body, SSE_BLOCK_BYTES, ad,
                                                   sizeof ad, nonce, block_key) != 0 ||
        plen != sizeof pt)
        goto out;
    rc = SSE_OPEN_MALFORMED;
    n = (size_t)pt[0] << 8 | pt[1];
    if (n > SSE_BLOCK_IDS) goto out;
    for (size_t k = 0; k < n; k++) {
        seqs[k] = get64(pt + 2 + 8 * k);
        /* Seq 0 is no message; descending order is what lets a search stop
         * reading a segment once it is below the page. */
        if (seqs[k] == 0 || (k && seqs[k] >= seqs[k - 1])) goto out;
    }
    if (!sodium_is_zero(pt + 2 + 8 * n, sizeof pt - 2 - 8 * n)) goto out;
    *count = n;
    rc = SSE_OPEN_OK;
out:
    if (rc != SSE_OPEN_OK) sodium_memzero(seqs, SSE_BLOCK_IDS * sizeof *seqs);
    /* The postings say which messages hold the keyword. */
    sodium_memzero(pt, sizeof pt);
    return rc;
}
