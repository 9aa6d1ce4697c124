/* GGM tree, covers, labels and posting blocks of encrypted search (ggm.h). */
#include "search/ggm.h"

#include <sodium.h>
#include <string.h>

_Static_assert(SR_SSE_BLOCK_BYTES == SR_SSE_BLOCK_PLAIN + crypto_aead_xchacha20poly1305_ietf_ABYTES,
               "block size");

int sr_sse_root(unsigned char out[32], const unsigned char kg[32], uint32_t gen, const char *kw,
                size_t kwlen)
{
    unsigned char in[1 + 4 + 1 + SR_SSE_KEYWORD_MAX];
    sr_e2e_writer w;
    int rc = SR_E2E_ERR_INVALID;

    if (!out || !kg || !kw || gen == 0 || kwlen == 0 || kwlen > SR_SSE_KEYWORD_MAX)
        return SR_E2E_ERR_INVALID;
    sr_e2e_writer_init(&w, in, sizeof in);
    sr_e2e_put_u8(&w, SR_SSE_NV);
    sr_e2e_put_u32(&w, gen);
    sr_e2e_put_u8(&w, (uint8_t)kwlen);
    sr_e2e_put_bytes(&w, kw, kwlen);
    if (!w.overflow)
        rc = sr_e2e_kdf(out, 32, kg, SR_SSE_LABEL_ROOT, in, w.len);
    /* The keyword is message or query plaintext. */
    sodium_memzero(in, sizeof in);
    return rc;
}

/* The KDF calls below have fixed, valid lengths and labels, so they cannot
 * fail; that is why the void functions ignore its result. */
void sr_sse_child(unsigned char out[32], const unsigned char node[32], int bit)
{
    unsigned char tmp[32];
    (void)sr_e2e_kdf(tmp, sizeof tmp, node, bit ? SR_SSE_LABEL_GGM_RIGHT : SR_SSE_LABEL_GGM_LEFT,
                     NULL, 0);
    memcpy(out, tmp, sizeof tmp);
    sodium_memzero(tmp, sizeof tmp);
}

/* Derives the node (depth, prefix) from the root, wiping every ancestor. */
static void descend(unsigned char out[32], const unsigned char root[32], unsigned depth,
                    uint32_t prefix)
{
    memmove(out, root, 32);
    for (unsigned j = 0; j < depth; j++)
        sr_sse_child(out, out, (int)((prefix >> (depth - 1 - j)) & 1));
}

void sr_sse_leaf(unsigned char out[32], const unsigned char root[32], uint32_t batch)
{
    descend(out, root, SR_SSE_DEPTH, batch);
}

/* The step from depth j to j + 1 on the way to the node (depth, prefix),
 * j < depth: the bits of prefix from the top. */
static int path_bit(unsigned depth, uint32_t prefix, unsigned j)
{
    return (int)((prefix >> (depth - 1 - j)) & 1);
}

size_t sr_sse_cover(sr_sse_node *out, size_t cap, const unsigned char root[32], uint32_t lo,
                    uint32_t hi)
{
    struct { uint8_t depth; uint32_t prefix; } nodes[SR_SSE_COVER_MAX];
    size_t count = 0;

    if (!out || !root || lo == 0 || lo > hi)
        return 0;
    /* Greedy from the left: at x take the largest aligned block that
     * starts at x and ends by hi. This is the canonical dyadic
     * decomposition, the unique minimal one. 64-bit x so that hi =
     * 2^32 - 1 ends the loop instead of wrapping. */
    for (uint64_t x = lo; x <= hi;) {
        unsigned k = 0;
        while (k < SR_SSE_DEPTH && (x & ((uint64_t)1 << k)) == 0)
            k++;
        while (x + ((uint64_t)1 << k) - 1 > hi)
            k--;
        nodes[count].depth = (uint8_t)(SR_SSE_DEPTH - k);
        nodes[count].prefix = (uint32_t)(x >> k);
        count++;
        x += (uint64_t)1 << k;
    }
    if (cap < count)
        return 0;
    /* The nodes hang off the paths to lo and hi, so each one shares most
     * of its path with the one before: path[j] keeps the key at depth j on
     * the way to the previous node (valid for j <= have), and only the
     * steps below where the two paths part are derived. That is at most
     * 64 child steps plus one per node (52 for [1, 410]) instead of up to
     * 32 per node (373). */
    unsigned char path[SR_SSE_DEPTH + 1][32];
    unsigned have = 0;
    memcpy(path[0], root, 32);
    for (size_t i = 0; i < count; i++) {
        unsigned depth = nodes[i].depth, keep = 0;
        uint32_t prefix = nodes[i].prefix;
        while (keep < have && keep < depth &&
               path_bit(depth, prefix, keep) == path_bit(have, nodes[i - 1].prefix, keep))
            keep++;
        for (unsigned j = keep; j < depth; j++)
            sr_sse_child(path[j + 1], path[j], path_bit(depth, prefix, j));
        have = depth;
        out[i].depth = nodes[i].depth;
        out[i].prefix = prefix;
        memcpy(out[i].key, path[depth], 32);
    }
    sodium_memzero(path, sizeof path);
    return count;
}

void sr_sse_label(unsigned char out[16], const unsigned char t[32], uint32_t counter)
{
    unsigned char in[4];
    sr_e2e_writer w;
    sr_e2e_writer_init(&w, in, sizeof in);
    sr_e2e_put_u32(&w, counter);
    (void)sr_e2e_kdf(out, SR_SSE_LABEL_BYTES, t, SR_SSE_LABEL_ENTRY, in, w.len);
}

void sr_sse_segment_key(unsigned char out[32], const unsigned char t_last[32], uint64_t segment)
{
    unsigned char in[8];
    sr_e2e_writer w;
    sr_e2e_writer_init(&w, in, sizeof in);
    sr_e2e_put_u64(&w, segment);
    (void)sr_e2e_kdf(out, 32, t_last, SR_SSE_LABEL_SEGMENT, in, w.len);
}

void sr_sse_block_label(unsigned char out[16], const unsigned char s[32], uint32_t i)
{
    unsigned char in[4];
    sr_e2e_writer w;
    sr_e2e_writer_init(&w, in, sizeof in);
    sr_e2e_put_u32(&w, i);
    (void)sr_e2e_kdf(out, SR_SSE_LABEL_BYTES, s, SR_SSE_LABEL_BLOCK_LABEL, in, w.len);
}

/* Block key, nonce and associated data of block i; the caller wipes bk. */
static void block_params(unsigned char bk[32],
                         unsigned char nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES],
                         unsigned char ad[12], const unsigned char s[32], uint64_t segment,
                         uint32_t i)
{
    sr_e2e_writer w;
    (void)sr_e2e_kdf(bk, 32, s, SR_SSE_LABEL_BLOCK_KEY, NULL, 0);
    /* (BK, i) is unique per block, so a counter nonce suffices and the
     * body stays exactly 274 bytes with no nonce on the wire. */
    memset(nonce, 0, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
    sr_e2e_writer_init(&w, nonce + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES - 4, 4);
    sr_e2e_put_u32(&w, i);
    sr_e2e_writer_init(&w, ad, 12);
    sr_e2e_put_u64(&w, segment);
    sr_e2e_put_u32(&w, i);
}

int sr_sse_block_seal(unsigned char out[SR_SSE_BLOCK_BYTES], const unsigned char s[32],
                      uint64_t segment, uint32_t i, const uint64_t *seqs, size_t n)
{
    unsigned char pt[SR_SSE_BLOCK_PLAIN], bk[32], ad[12];
    unsigned char nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
    unsigned long long clen;
    sr_e2e_writer w;
    int rc = SR_E2E_ERR_INVALID;

    if (!out || !s || n > SR_SSE_BLOCK_IDS || (n && !seqs))
        return SR_E2E_ERR_INVALID;
    for (size_t k = 1; k < n; k++)
        if (seqs[k] >= seqs[k - 1])
            return SR_E2E_ERR_INVALID;
    memset(pt, 0, sizeof pt);
    sr_e2e_writer_init(&w, pt, sizeof pt);
    sr_e2e_put_u16(&w, (uint16_t)n);
    for (size_t k = 0; k < n; k++)
        sr_e2e_put_u64(&w, seqs[k]);
    block_params(bk, nonce, ad, s, segment, i);
    if (crypto_aead_xchacha20poly1305_ietf_encrypt(out, &clen, pt, sizeof pt, ad, sizeof ad, NULL,
                                                   nonce, bk) == 0 &&
        clen == SR_SSE_BLOCK_BYTES)
        rc = SR_E2E_OK;
    /* The postings say which messages hold the keyword. */
    sodium_memzero(pt, sizeof pt);
    sodium_memzero(bk, sizeof bk);
    return rc;
}

int sr_sse_block_open(uint64_t seqs[SR_SSE_BLOCK_IDS], size_t *n, const unsigned char s[32],
                      uint64_t segment, uint32_t i, const unsigned char body[SR_SSE_BLOCK_BYTES])
{
    unsigned char pt[SR_SSE_BLOCK_PLAIN], bk[32], ad[12];
    unsigned char nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
    unsigned long long plen;
    size_t count;
    int rc;

    if (!seqs || !n || !s || !body)
        return SR_E2E_ERR_INVALID;
    *n = 0;
    memset(seqs, 0, SR_SSE_BLOCK_IDS * sizeof *seqs);
    block_params(bk, nonce, ad, s, segment, i);
    rc = SR_E2E_ERR_DECRYPT;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(pt, &plen, NULL, body, SR_SSE_BLOCK_BYTES, ad,
                                                   sizeof ad, nonce, bk) != 0 ||
        plen != sizeof pt)
        goto out;
    rc = SR_E2E_ERR_MALFORMED;
    count = sr_e2e_get_u16(pt);
    if (count > SR_SSE_BLOCK_IDS)
        goto out;
    for (size_t k = 0; k < count; k++) {
        seqs[k] = sr_e2e_get_u64(pt + 2 + 8 * k);
        if (k && seqs[k] >= seqs[k - 1])
            goto out;
    }
    /* Authentic yet badly padded means a buggy or hostile writer in the
     * room; refuse rather than guess. */
    for (size_t b = 2 + 8 * count; b < sizeof pt; b++)
        if (pt[b])
            goto out;
    *n = count;
    rc = SR_E2E_OK;
out:
    if (rc != SR_E2E_OK)
        sodium_memzero(seqs, SR_SSE_BLOCK_IDS * sizeof *seqs);
    sodium_memzero(pt, sizeof pt);
    sodium_memzero(bk, sizeof bk);
    return rc;
}
