/* Secret-free checks of end-to-end material (see e2echeck.h). The signed
 * layouts are re-encoded here rather than linked from libclient/src/e2e, so
 * the component and the library stay separate programs; test_e2echeck.c
 * compares both encoders byte for byte. */
#include "e2echeck.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

static const char LABEL_ENVELOPE[] = "sealroom.e2e.v1.envelope";
static const char LABEL_BUNDLE[] = "sealroom.e2e.v1.identity.bundle";

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

static void put_u8(enc *e, unsigned v)
{
    unsigned char b = (unsigned char)v;
    put(e, &b, 1);
}

static void put_u64(enc *e, uint64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (56 - 8 * i));
    put(e, b, sizeof b);
}

static void put_lp8(enc *e, const char *s)
{
    size_t n = strlen(s);
    put_u8(e, (unsigned)n);
    put(e, s, n);
}

static bool put_lp16(enc *e, const char *s)
{
    size_t n = s ? strnlen(s, EC_JID_MAX + 1) : 0;
    if (n == 0 || n > EC_JID_MAX) return false;
    unsigned char b[2] = {(unsigned char)(n >> 8), (unsigned char)n};
    put(e, b, 2);
    put(e, s, n);
    return true;
}

size_t ec_envelope_message_len(size_t room_len, size_t sealer_len, size_t recipient_len)
{
    return 1 + (sizeof LABEL_ENVELOPE - 1) + 1 + 2 + room_len + 8 + EC_HASH_BYTES + 2 +
           sealer_len + 2 + recipient_len + EC_KEY_BYTES + EC_ENVELOPE_BOX_BYTES;
}

size_t ec_envelope_message(unsigned char *buf, size_t cap, const char *room, uint64_t epoch,
                           const unsigned char roster_hash[EC_HASH_BYTES], const char *sealer,
                           const char *recipient, const unsigned char recipient_x_pk[EC_KEY_BYTES],
                           const unsigned char box[EC_ENVELOPE_BOX_BYTES])
{
    enc e = {buf, cap, 0, false};
    put_lp8(&e, LABEL_ENVELOPE);
    put_u8(&e, EC_ENVELOPE_VERSION);
    if (!put_lp16(&e, room)) return 0;
    put_u64(&e, epoch);
    put(&e, roster_hash, EC_HASH_BYTES);
    if (!put_lp16(&e, sealer) || !put_lp16(&e, recipient)) return 0;
    put(&e, recipient_x_pk, EC_KEY_BYTES);
    put(&e, box, EC_ENVELOPE_BOX_BYTES);
    return e.over ? 0 : e.len;
}

bool ec_envelope_verify(const unsigned char *env, size_t len, const char *room, uint64_t epoch,
                        const unsigned char roster_hash[EC_HASH_BYTES], const char *sealer,
                        const char *recipient, const unsigned char recipient_x_pk[EC_KEY_BYTES],
                        const unsigned char sealer_pk[EC_KEY_BYTES])
{
    if (!env || len != EC_ENVELOPE_BYTES || env[0] != EC_ENVELOPE_VERSION || !room || !sealer ||
        !recipient)
        return false;
    size_t cap = ec_envelope_message_len(strnlen(room, EC_JID_MAX + 1),
                                         strnlen(sealer, EC_JID_MAX + 1),
                                         strnlen(recipient, EC_JID_MAX + 1));
    unsigned char *msg = malloc(cap);
    if (!msg) return false;
    size_t n = ec_envelope_message(msg, cap, room, epoch, roster_hash, sealer, recipient,
                                   recipient_x_pk, env + 1);
    bool ok = n > 0 && crypto_sign_verify_detached(env + 1 + EC_ENVELOPE_BOX_BYTES, msg, n,
                                                   sealer_pk) == 0;
    free(msg);
    return ok;
}

bool ec_bundle_verify(const unsigned char sig[EC_SIG_BYTES], const char *bare_jid,
                      const unsigned char ed_pk[EC_KEY_BYTES], const unsigned char x_pk[EC_KEY_BYTES])
{
    unsigned char msg[1 + sizeof LABEL_BUNDLE + 2 + EC_JID_MAX + 2 * EC_KEY_BYTES];
    enc e = {msg, sizeof msg, 0, false};
    put_lp8(&e, LABEL_BUNDLE);
    if (!put_lp16(&e, bare_jid)) return false;
    put(&e, ed_pk, EC_KEY_BYTES);
    put(&e, x_pk, EC_KEY_BYTES);
    return !e.over && crypto_sign_verify_detached(sig, msg, e.len, ed_pk) == 0;
}

bool ec_payload_parse(const unsigned char *p, size_t len, unsigned char dkid[EC_DKID_BYTES],
                      uint64_t *roster_version)
{
    if (!p || len < EC_PAYLOAD_MIN || p[0] != EC_PAYLOAD_VERSION) return false;
    memcpy(dkid, p + 1, EC_DKID_BYTES);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | p[1 + EC_DKID_BYTES + i];
    *roster_version = v;
    return true;
}

bool ec_vault_blob_ok(const unsigned char *blob, size_t len)
{
    return blob && len >= EC_VAULT_MIN && len <= EC_VAULT_MAX && memcmp(blob, "SRVL", 4) == 0 &&
           blob[4] == 1;
}

/* Bring the bucket up to now_ms; a clock that went back refills nothing. */
static void refill(ec_bucket *b, long long now_ms, int burst, int per_hour)
{
    if (!b->started) {
        b->tokens = burst;
        b->last_ms = now_ms;
        b->started = true;
        return;
    }
    if (now_ms > b->last_ms) {
        b->tokens += (double)(now_ms - b->last_ms) * per_hour / 3600000.0;
        b->last_ms = now_ms;
    }
    /* A reload may have lowered burst. */
    if (b->tokens > burst) b->tokens = burst;
}

bool ec_bucket_take(ec_bucket *b, long long now_ms, int burst, int per_hour, long long *retry_ms)
{
    if (burst < 1) burst = 1;
    if (per_hour < 1) per_hour = 1;
    refill(b, now_ms, burst, per_hour);
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
        return true;
    }
    if (retry_ms) {
        double wait = (1.0 - b->tokens) * 3600000.0 / per_hour;
        *retry_ms = (long long)wait + 1;
    }
    return false;
}

bool ec_bucket_full(const ec_bucket *b, long long now_ms, int burst, int per_hour)
{
    if (!b->started) return true;
    ec_bucket c = *b;
    refill(&c, now_ms, burst < 1 ? 1 : burst, per_hour < 1 ? 1 : per_hour);
    return c.tokens >= burst;
}
