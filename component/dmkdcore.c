/* The component's share of the multi-cast key distribution arithmetic (see
 * dmkdcore.h). The signed and hashed layouts are re-encoded here from
 * libsodium rather than linked from libclient/src/e2e, so the component and
 * the library stay separate programs; test_dmkdcore.c runs real runs of the
 * library against this file and holds both to the same bytes. */
#include "dmkdcore.h"

#include <sodium.h>
#include <string.h>

static const char LABEL_COMMIT[] = "sealroom.dmkd.v1.commitment";
static const char LABEL_ROUND1[] = "sealroom.dmkd.v1.round1";
static const char LABEL_SID[] = "sealroom.dmkd.v1.sid";
static const char LABEL_ROUND2[] = "sealroom.dmkd.v1.round2";

#define JID_MAX 2047
/* The library refuses larger rings (SR_E2E_DMKD_MAX_MEMBERS); a sid it
 * would not compute is no sid, and u32 n must not wrap. */
#define MAX_MEMBERS 100000u
#define CTX_MIN (2 + 1 + 8 + DK_BYTES + DK_RUN_ID_BYTES)
/* lp8(label) ‖ ctx ‖ lp16(jid) ‖ two 32-byte values */
#define MSG_MAX (1 + 255 + DK_CTX_MAX + 2 + JID_MAX + 2 * DK_BYTES)

/* Encoder over a caller buffer; writing past cap marks it and stops. */
typedef struct enc {
    unsigned char *p;
    size_t cap, len;
    bool over;
} enc;

static void put(enc *e, const void *src, size_t n)
{
    if (e->over || n > e->cap - e->len) {
        e->over = true;
        return;
    }
    memcpy(e->p + e->len, src, n);
    e->len += n;
}

static void put_be(enc *e, uint64_t v, int bytes)
{
    unsigned char b[8];
    for (int i = 0; i < bytes; i++)
        b[i] = (unsigned char)(v >> (8 * (bytes - 1 - i)));
    put(e, b, (size_t)bytes);
}

/* Labels are constants of this file, all shorter than 256 bytes. */
static void put_lp8(enc *e, const char *label)
{
    size_t n = strlen(label);
    put_be(e, n, 1);
    put(e, label, n);
}

/* JIDs (and the room): 1..JID_MAX bytes, else false and nothing written. */
static bool put_lp16(enc *e, const char *s)
{
    size_t n = s ? strnlen(s, JID_MAX + 1) : 0;
    if (n == 0 || n > JID_MAX) return false;
    put_be(e, n, 2);
    put(e, s, n);
    return true;
}

static bool ctx_ok(const dk_ctx *ctx)
{
    return ctx && ctx->len >= CTX_MIN && ctx->len <= DK_CTX_MAX;
}

static void xor32(unsigned char *out, const unsigned char *a, const unsigned char *b)
{
    for (size_t i = 0; i < DK_BYTES; i++)
        out[i] = a[i] ^ b[i];
}

bool dk_ctx_build(dk_ctx *ctx, const char *room, uint64_t epoch,
                  const unsigned char roster_hash[DK_BYTES],
                  const unsigned char run_id[DK_RUN_ID_BYTES])
{
    if (!ctx) return false;
    ctx->len = 0;
    if (!roster_hash || !run_id) return false;
    enc e = {ctx->b, sizeof ctx->b, 0, false};
    if (!put_lp16(&e, room)) return false;
    put_be(&e, epoch, 8);
    put(&e, roster_hash, DK_BYTES);
    put(&e, run_id, DK_RUN_ID_BYTES);
    if (e.over) return false;
    ctx->len = e.len;
    return true;
}

/* lp8(label) ‖ head ‖ lp16(jid) ‖ a ‖ b, where head is the ctx (round 1)
 * or the sid (round 2); 0 on a bad JID. */
static size_t round_msg(unsigned char buf[MSG_MAX], const char *label, const unsigned char *head,
                        size_t head_len, const char *jid, const unsigned char a[DK_BYTES],
                        const unsigned char b[DK_BYTES])
{
    enc e = {buf, MSG_MAX, 0, false};
    put_lp8(&e, label);
    put(&e, head, head_len);
    if (!put_lp16(&e, jid)) return 0;
    put(&e, a, DK_BYTES);
    put(&e, b, DK_BYTES);
    return e.over ? 0 : e.len;
}

/* As the library's point check: besides a valid encoding, the top bit clear
 * (libsodium 1.0.18 ignores it, RFC 9496 demands the canonical encoding)
 * and not the identity, whose edge keys would be public. */
static bool point_ok(const unsigned char p[DK_BYTES])
{
    return (p[DK_BYTES - 1] & 0x80) == 0 && crypto_core_ristretto255_is_valid_point(p) == 1 &&
           !sodium_is_zero(p, DK_BYTES);
}

bool dk_round1_ok(const unsigned char sig[DK_SIG_BYTES], const dk_ctx *ctx, const char *jid,
                  const unsigned char R[DK_BYTES], const unsigned char c[DK_BYTES],
                  const unsigned char pk[DK_BYTES])
{
    unsigned char msg[MSG_MAX];
    if (!sig || !ctx_ok(ctx) || !R || !c || !pk || !point_ok(R)) return false;
    size_t n = round_msg(msg, LABEL_ROUND1, ctx->b, ctx->len, jid, R, c);
    return n > 0 && crypto_sign_verify_detached(sig, msg, n, pk) == 0;
}

bool dk_round2_ok(const unsigned char sig[DK_SIG_BYTES], const unsigned char sid[DK_BYTES],
                  const char *jid, const unsigned char T[DK_BYTES],
                  const unsigned char second[DK_BYTES], const unsigned char pk[DK_BYTES])
{
    unsigned char msg[MSG_MAX];
    if (!sig || !sid || !T || !second || !pk) return false;
    size_t n = round_msg(msg, LABEL_ROUND2, sid, DK_BYTES, jid, T, second);
    return n > 0 && crypto_sign_verify_detached(sig, msg, n, pk) == 0;
}

bool dk_sid(unsigned char sid[DK_BYTES], const dk_ctx *ctx, size_t n, const char *const *jids,
            const unsigned char (*c)[DK_BYTES], const unsigned char (*R)[DK_BYTES])
{
    unsigned char head[1 + 255 + DK_CTX_MAX + 4];
    unsigned char item[2 + JID_MAX + 2 * DK_BYTES];
    crypto_generichash_state st;

    if (!sid || !ctx_ok(ctx) || !jids || !c || !R || n < 2 || n > MAX_MEMBERS) return false;
    /* Every JID before any hashing, so a refusal leaves sid as it was. */
    for (size_t i = 0; i < n; i++) {
        size_t len = jids[i] ? strnlen(jids[i], JID_MAX + 1) : 0;
        if (len == 0 || len > JID_MAX) return false;
    }
    enc e = {head, sizeof head, 0, false};
    put_lp8(&e, LABEL_SID);
    put(&e, ctx->b, ctx->len);
    put_be(&e, n, 4);
    if (e.over) return false;
    crypto_generichash_init(&st, NULL, 0, DK_BYTES);
    crypto_generichash_update(&st, head, e.len);
    for (size_t i = 0; i < n; i++) {
        e = (enc){item, sizeof item, 0, false};
        put_lp16(&e, jids[i]);
        put(&e, c[i], DK_BYTES);
        put(&e, R[i], DK_BYTES);
        crypto_generichash_update(&st, item, e.len);
    }
    crypto_generichash_final(&st, sid, DK_BYTES);
    return true;
}

/* Does k open c for jid? BLAKE2b-256(lp8(DMKD_COMMIT) ‖ ctx ‖ lp16(jid) ‖ k)
 * compared in constant time: k is the member's share of the key. false
 * also on a bad JID. */
static bool opens(const unsigned char c[DK_BYTES], const dk_ctx *ctx, const char *jid,
                  const unsigned char k[DK_BYTES])
{
    unsigned char msg[MSG_MAX], cc[DK_BYTES];
    enc e = {msg, sizeof msg, 0, false};
    bool ok = false;

    put_lp8(&e, LABEL_COMMIT);
    put(&e, ctx->b, ctx->len);
    if (!put_lp16(&e, jid)) goto out;
    put(&e, k, DK_BYTES);
    ok = !e.over && crypto_generichash(cc, sizeof cc, msg, e.len, NULL, 0) == 0 &&
         sodium_memcmp(cc, c, DK_BYTES) == 0;
out:
    sodium_memzero(msg, sizeof msg);
    sodium_memzero(cc, sizeof cc);
    return ok;
}

/* Outputs are written only on DK_COMBINE_OK; on any other result k_prime
 * is zeroed (when given) so a half-built key is never mistaken for one. */
int dk_combine(unsigned char k_prime[DK_BYTES], unsigned char (*T_prime)[DK_BYTES], size_t *bad,
               const dk_ctx *ctx, size_t n, const char *const *jids,
               const unsigned char (*c)[DK_BYTES], const unsigned char (*T)[DK_BYTES],
               const unsigned char (*k)[DK_BYTES], const unsigned char k_server[DK_BYTES])
{
    unsigned char acc[DK_BYTES], ring[DK_BYTES];
    int rc = DK_COMBINE_INVALID;

    memset(acc, 0, sizeof acc);
    if (bad) *bad = 0;
    if (!k_prime || !T_prime || !bad || !ctx_ok(ctx) || !jids || !c || !T || !k || !k_server ||
        n < 2 || n > MAX_MEMBERS)
        goto out;
    memcpy(acc, k_server, DK_BYTES);
    for (size_t i = 1; i < n; i++) {
        size_t len = jids[i] ? strnlen(jids[i], JID_MAX + 1) : 0;
        if (len == 0 || len > JID_MAX) goto out;
        if (!opens(c[i], ctx, jids[i], k[i])) {
            *bad = i;
            rc = DK_COMBINE_COMMITMENT;
            goto out;
        }
        xor32(acc, acc, k[i]);
    }
    /* Every edge key enters twice: a ring whose T's do not cancel was not
     * computed over one consistent set of R's, and no one T is to blame. */
    memset(ring, 0, sizeof ring);
    for (size_t i = 0; i < n; i++)
        xor32(ring, ring, T[i]);
    if (!sodium_is_zero(ring, sizeof ring)) {
        rc = DK_COMBINE_RING;
        goto out;
    }
    memset(ring, 0, sizeof ring);
    for (size_t i = 0; i < n; i++) {
        memcpy(T_prime[i], ring, DK_BYTES);
        xor32(ring, ring, T[i]);
    }
    memcpy(k_prime, acc, DK_BYTES);
    rc = DK_COMBINE_OK;
out:
    if (rc != DK_COMBINE_OK && k_prime) sodium_memzero(k_prime, DK_BYTES);
    sodium_memzero(acc, sizeof acc);
    return rc;
}
