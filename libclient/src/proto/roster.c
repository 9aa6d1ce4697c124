/* The signed roster chain (xep/sealroom.xml, "The Roster Chain"): canonical bytes,
 * hashing, signing and the membership rules. sealroomd uses it to refuse bad
 * versions and libsealroom to verify what the server hands it, so both sides
 * must agree byte for byte; keep this file free of I/O. */
#include "roster.h"

#include "jid.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

static const char ROSTER_LABEL[] = "sealroom-roster-v0";     /* 18 bytes, no NUL */
static const char IDENTITY_LABEL[] = "sealroom-identity-v0"; /* 20 bytes, no NUL */

const char *sr_roster_err_text(sr_roster_err err)
{
    switch (err) {
    case SR_ROSTER_OK: return "ok";
    case SR_ROSTER_ERR_MALFORMED: return "malformed roster version";
    case SR_ROSTER_ERR_STALE: return "version does not follow the current version";
    case SR_ROSTER_ERR_CHAIN: return "prev does not match the hash of the current version";
    case SR_ROSTER_ERR_SIGNER: return "signer lacks the role for these changes";
    case SR_ROSTER_ERR_SIGNATURE: return "bad signature";
    case SR_ROSTER_ERR_RULE: return "change breaks a roster rule";
    case SR_ROSTER_ERR_NOMEM: return "out of memory";
    }
    return "unknown roster error";
}

const char *sr_role_name(sr_role role)
{
    switch (role) {
    case SR_ROLE_MEMBER: return "member";
    case SR_ROLE_ADMIN: return "admin";
    case SR_ROLE_OWNER: return "owner";
    case SR_ROLE_NONE: break;
    }
    return "none";
}

sr_role sr_role_parse(const char *name)
{
    if (!name)
        return SR_ROLE_NONE;
    if (strcmp(name, "member") == 0)
        return SR_ROLE_MEMBER;
    if (strcmp(name, "admin") == 0)
        return SR_ROLE_ADMIN;
    if (strcmp(name, "owner") == 0)
        return SR_ROLE_OWNER;
    return SR_ROLE_NONE;
}

/* ---- canonical bytes ---- */

static size_t bounded_len(const char *s)
{
    return strnlen(s, SR_BARE_JID_MAX);
}

size_t sr_roster_canonical_len(const sr_roster_version *v)
{
    if (!v || v->nops > SR_ROSTER_MAX_OPS)
        return 0;
    size_t n = (sizeof ROSTER_LABEL - 1) + 2 + bounded_len(v->room) + 8 + SR_ROSTER_HASH_BYTES +
               2 + bounded_len(v->signer) + 2;
    for (unsigned i = 0; i < v->nops; i++)
        n += 1 + 2 + bounded_len(v->ops[i].jid) + 1 + SR_KEY_BYTES;
    return n;
}

static unsigned char *put_u16(unsigned char *p, size_t x)
{
    p[0] = (unsigned char)(x >> 8);
    p[1] = (unsigned char)x;
    return p + 2;
}

static unsigned char *put_str(unsigned char *p, const char *s)
{
    size_t n = bounded_len(s);
    p = put_u16(p, n);
    memcpy(p, s, n);
    return p + n;
}

size_t sr_roster_canonical(unsigned char *out, size_t outlen, const sr_roster_version *v)
{
    size_t need = sr_roster_canonical_len(v);
    if (need == 0 || !out || outlen < need)
        return 0;
    /* A JID longer than a u16 can say cannot be encoded; the limits in
     * roster.h keep this unreachable, but never emit ambiguous bytes. */
    if (bounded_len(v->room) >= SR_BARE_JID_MAX || bounded_len(v->signer) >= SR_BARE_JID_MAX)
        return 0;
    unsigned char *p = out;
    memcpy(p, ROSTER_LABEL, sizeof ROSTER_LABEL - 1);
    p += sizeof ROSTER_LABEL - 1;
    p = put_str(p, v->room);
    for (int s = 56; s >= 0; s -= 8)
        *p++ = (unsigned char)(v->version >> s);
    memcpy(p, v->prev, SR_ROSTER_HASH_BYTES);
    p += SR_ROSTER_HASH_BYTES;
    p = put_str(p, v->signer);
    p = put_u16(p, v->nops);
    for (unsigned i = 0; i < v->nops; i++) {
        const sr_roster_op *op = &v->ops[i];
        if (bounded_len(op->jid) >= SR_BARE_JID_MAX)
            return 0;
        *p++ = (unsigned char)op->kind;
        p = put_str(p, op->jid);
        *p++ = (unsigned char)op->role;
        memcpy(p, op->key, SR_KEY_BYTES);
        p += SR_KEY_BYTES;
    }
    return (size_t)(p - out);
}

typedef struct reader {
    const unsigned char *p;
    size_t left;
} reader;

static bool get_bytes(reader *r, void *dst, size_t n)
{
    if (r->left < n)
        return false;
    memcpy(dst, r->p, n);
    r->p += n;
    r->left -= n;
    return true;
}

static bool get_u16(reader *r, size_t *x)
{
    unsigned char b[2];
    if (!get_bytes(r, b, 2))
        return false;
    *x = ((size_t)b[0] << 8) | b[1];
    return true;
}

static bool get_str(reader *r, char dst[SR_BARE_JID_MAX])
{
    size_t n;
    if (!get_u16(r, &n) || n >= SR_BARE_JID_MAX || !get_bytes(r, dst, n))
        return false;
    dst[n] = '\0';
    return memchr(dst, '\0', n) == NULL;
}

bool sr_roster_from_canonical(sr_roster_version *v, const unsigned char *in, size_t inlen)
{
    if (!v || !in)
        return false;
    reader r = {in, inlen};
    unsigned char label[sizeof ROSTER_LABEL - 1];
    unsigned char ver[8];
    size_t nops;
    memset(v, 0, sizeof *v);
    if (!get_bytes(&r, label, sizeof label) || memcmp(label, ROSTER_LABEL, sizeof label) != 0)
        goto bad;
    if (!get_str(&r, v->room) || !get_bytes(&r, ver, sizeof ver) ||
        !get_bytes(&r, v->prev, SR_ROSTER_HASH_BYTES) || !get_str(&r, v->signer) ||
        !get_u16(&r, &nops) || nops > SR_ROSTER_MAX_OPS)
        goto bad;
    for (int i = 0; i < 8; i++)
        v->version = (v->version << 8) | ver[i];
    v->nops = (unsigned)nops;
    for (size_t i = 0; i < nops; i++) {
        sr_roster_op *op = &v->ops[i];
        unsigned char kind, role;
        if (!get_bytes(&r, &kind, 1) || kind < SR_OP_ADD || kind > SR_OP_ROLE ||
            !get_str(&r, op->jid) || !get_bytes(&r, &role, 1) || role > SR_ROLE_OWNER ||
            !get_bytes(&r, op->key, SR_KEY_BYTES))
            goto bad;
        op->kind = (sr_op_kind)kind;
        op->role = (sr_role)role;
    }
    if (r.left != 0)
        goto bad;
    return true;
bad:
    memset(v, 0, sizeof *v);
    return false;
}

/* ---- hash and signatures ---- */

/* Encodes into a heap buffer: a version can be ~130 KiB. */
static unsigned char *canonical_alloc(const sr_roster_version *v, size_t *len)
{
    size_t n = sr_roster_canonical_len(v);
    if (n == 0)
        return NULL;
    unsigned char *buf = malloc(n);
    if (!buf)
        return NULL;
    if (sr_roster_canonical(buf, n, v) != n) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

bool sr_roster_hash(unsigned char hash[SR_ROSTER_HASH_BYTES], const sr_roster_version *v)
{
    size_t n;
    unsigned char *buf = canonical_alloc(v, &n);
    if (!buf)
        return false;
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, SR_ROSTER_HASH_BYTES);
    crypto_generichash_update(&st, buf, n);
    crypto_generichash_update(&st, v->sig, SR_SIG_BYTES);
    crypto_generichash_final(&st, hash, SR_ROSTER_HASH_BYTES);
    free(buf);
    return true;
}

bool sr_roster_sign(sr_roster_version *v, const unsigned char sk[64])
{
    size_t n;
    unsigned char *buf = canonical_alloc(v, &n);
    if (!buf)
        return false;
    bool ok = crypto_sign_detached(v->sig, NULL, buf, n, sk) == 0;
    free(buf);
    return ok;
}

static bool roster_verify_sig(const sr_roster_version *v, const unsigned char pk[SR_KEY_BYTES],
                              bool *nomem)
{
    size_t n;
    unsigned char *buf = canonical_alloc(v, &n);
    if (!buf) {
        *nomem = true;
        return false;
    }
    bool ok = crypto_sign_verify_detached(v->sig, buf, n, pk) == 0;
    free(buf);
    return ok;
}

/* ---- state ---- */

void sr_roster_state_init(sr_roster_state *state)
{
    memset(state, 0, sizeof *state);
}

void sr_roster_state_free(sr_roster_state *state)
{
    if (!state)
        return;
    free(state->members);
    memset(state, 0, sizeof *state);
}

/* Lower-bound binary search: index of jid, or where it would be inserted. */
static size_t member_pos(const sr_roster_state *s, const char *jid, bool *found)
{
    size_t lo = 0, hi = s->nmembers;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(s->members[mid].jid, jid);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

const sr_member *sr_roster_find(const sr_roster_state *state, const char *bare_jid)
{
    if (!state || !bare_jid || state->nmembers == 0)
        return NULL;
    bool found;
    size_t i = member_pos(state, bare_jid, &found);
    return found ? &state->members[i] : NULL;
}

sr_roster_err sr_roster_state_copy(sr_roster_state *dst, const sr_roster_state *src)
{
    sr_roster_state tmp = *src;
    tmp.members = NULL;
    tmp.cap = src->nmembers;
    if (src->nmembers) {
        tmp.members = malloc(src->nmembers * sizeof *tmp.members);
        if (!tmp.members)
            return SR_ROSTER_ERR_NOMEM;
        memcpy(tmp.members, src->members, src->nmembers * sizeof *tmp.members);
    }
    *dst = tmp;
    return SR_ROSTER_OK;
}

static bool state_insert(sr_roster_state *s, const char *jid, sr_role role,
                         const unsigned char key[SR_KEY_BYTES])
{
    bool found;
    size_t pos = member_pos(s, jid, &found);
    if (found)
        return false;
    if (s->nmembers == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        sr_member *m = realloc(s->members, cap * sizeof *m);
        if (!m)
            return false;
        s->members = m;
        s->cap = cap;
    }
    memmove(&s->members[pos + 1], &s->members[pos], (s->nmembers - pos) * sizeof *s->members);
    sr_member *m = &s->members[pos];
    memset(m, 0, sizeof *m);
    memcpy(m->jid, jid, strlen(jid) + 1);
    m->role = role;
    memcpy(m->key, key, SR_KEY_BYTES);
    s->nmembers++;
    return true;
}

static void state_remove(sr_roster_state *s, const char *jid)
{
    bool found;
    size_t pos = member_pos(s, jid, &found);
    if (!found)
        return;
    memmove(&s->members[pos], &s->members[pos + 1], (s->nmembers - pos - 1) * sizeof *s->members);
    s->nmembers--;
}

/* ---- rules ---- */

static bool is_normal_bare(const char *jid, bool need_local)
{
    char norm[SR_BARE_JID_MAX];
    if (memchr(jid, '\0', SR_BARE_JID_MAX) == NULL)
        return false;
    sr_jid parts;
    if (!sr_jid_parse(&parts, jid) || parts.resource[0] || (need_local && !parts.local[0]))
        return false;
    return sr_jid_bare(norm, sizeof norm, &parts) && strcmp(norm, jid) == 0;
}

static bool all_zero(const unsigned char *p, size_t n)
{
    unsigned char acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

/* Shape checks that need no state: counts, JIDs, roles, keys, duplicates. */
static sr_roster_err check_shape(const sr_roster_version *v)
{
    if (v->nops < 1 || v->nops > SR_ROSTER_MAX_OPS)
        return SR_ROSTER_ERR_MALFORMED;
    if (!is_normal_bare(v->room, true) || !is_normal_bare(v->signer, true))
        return SR_ROSTER_ERR_MALFORMED;
    for (unsigned i = 0; i < v->nops; i++) {
        const sr_roster_op *op = &v->ops[i];
        if (!is_normal_bare(op->jid, true))
            return SR_ROSTER_ERR_MALFORMED;
        switch (op->kind) {
        case SR_OP_ADD:
        case SR_OP_ROLE:
            if (op->role < SR_ROLE_MEMBER || op->role > SR_ROLE_OWNER)
                return SR_ROSTER_ERR_MALFORMED;
            if (op->kind == SR_OP_ROLE && !all_zero(op->key, SR_KEY_BYTES))
                return SR_ROSTER_ERR_MALFORMED;
            break;
        case SR_OP_REMOVE:
            if (op->role != SR_ROLE_NONE || !all_zero(op->key, SR_KEY_BYTES))
                return SR_ROSTER_ERR_MALFORMED;
            break;
        default:
            return SR_ROSTER_ERR_MALFORMED;
        }
        for (unsigned k = 0; k < i; k++)
            if (strcmp(v->ops[k].jid, op->jid) == 0)
                return SR_ROSTER_ERR_MALFORMED;
    }
    return SR_ROSTER_OK;
}

/* Applies the ops of an already authorised version to s (a scratch copy). */
static sr_roster_err apply_ops(sr_roster_state *s, const sr_roster_version *v, sr_role signer_role)
{
    for (unsigned i = 0; i < v->nops; i++) {
        const sr_roster_op *op = &v->ops[i];
        bool found;
        size_t pos = member_pos(s, op->jid, &found);
        sr_role before = found ? s->members[pos].role : SR_ROLE_NONE;
        sr_role after = op->kind == SR_OP_REMOVE ? SR_ROLE_NONE : op->role;

        if (op->kind == SR_OP_ADD && found)
            return SR_ROSTER_ERR_RULE;
        if (op->kind != SR_OP_ADD && !found)
            return SR_ROSTER_ERR_RULE;
        if (op->kind == SR_OP_ROLE && before == after)
            return SR_ROSTER_ERR_RULE;
        if (signer_role == SR_ROLE_ADMIN &&
            ((before != SR_ROLE_NONE && before != SR_ROLE_MEMBER) ||
             (after != SR_ROLE_NONE && after != SR_ROLE_MEMBER)))
            return SR_ROSTER_ERR_SIGNER;

        if (op->kind == SR_OP_ADD) {
            if (!state_insert(s, op->jid, op->role, op->key))
                return SR_ROSTER_ERR_NOMEM;
        } else if (op->kind == SR_OP_REMOVE) {
            state_remove(s, op->jid);
        } else {
            s->members[pos].role = op->role;
        }
    }
    for (size_t i = 0; i < s->nmembers; i++)
        if (s->members[i].role == SR_ROLE_OWNER)
            return SR_ROSTER_OK;
    return SR_ROSTER_ERR_RULE;
}

/* Decides who may sign v and with which key, then verifies the signature. */
static sr_roster_err check_signer(const sr_roster_state *state, const sr_roster_version *v,
                                  sr_role *signer_role)
{
    const unsigned char *key = NULL;
    if (v->version == 0) {
        for (unsigned i = 0; i < v->nops; i++)
            if (v->ops[i].kind == SR_OP_ADD && strcmp(v->ops[i].jid, v->signer) == 0 &&
                v->ops[i].role == SR_ROLE_OWNER)
                key = v->ops[i].key;
        if (!key)
            return SR_ROSTER_ERR_SIGNER;
        *signer_role = SR_ROLE_OWNER;
    } else {
        const sr_member *m = sr_roster_find(state, v->signer);
        if (!m)
            return SR_ROSTER_ERR_SIGNER;
        bool self_removal = v->nops == 1 && v->ops[0].kind == SR_OP_REMOVE &&
                            strcmp(v->ops[0].jid, v->signer) == 0;
        if (m->role != SR_ROLE_OWNER && m->role != SR_ROLE_ADMIN && !self_removal)
            return SR_ROSTER_ERR_SIGNER;
        /* Leaving is always the member's own choice, whatever its role; the
         * last-owner rule still applies after the ops. */
        *signer_role = self_removal ? SR_ROLE_OWNER : m->role;
        key = m->key;
    }
    bool nomem = false;
    if (!roster_verify_sig(v, key, &nomem))
        return nomem ? SR_ROSTER_ERR_NOMEM : SR_ROSTER_ERR_SIGNATURE;
    return SR_ROSTER_OK;
}

/* Full check; on success *out (if given) holds the state after v. */
static sr_roster_err check_and_build(const sr_roster_state *state, const sr_roster_version *v,
                                     sr_roster_state *out)
{
    if (!state || !v)
        return SR_ROSTER_ERR_MALFORMED;
    sr_roster_err err = check_shape(v);
    if (err)
        return err;
    if (!state->exists) {
        if (v->version != 0)
            return SR_ROSTER_ERR_STALE;
        if (!all_zero(v->prev, SR_ROSTER_HASH_BYTES))
            return SR_ROSTER_ERR_CHAIN;
    } else {
        if (state->version == UINT64_MAX || v->version != state->version + 1)
            return SR_ROSTER_ERR_STALE;
        if (sodium_memcmp(v->prev, state->head, SR_ROSTER_HASH_BYTES) != 0)
            return SR_ROSTER_ERR_CHAIN;
    }
    sr_role signer_role;
    err = check_signer(state, v, &signer_role);
    if (err)
        return err;

    sr_roster_state scratch;
    err = sr_roster_state_copy(&scratch, state);
    if (err)
        return err;
    err = apply_ops(&scratch, v, signer_role);
    if (err == SR_ROSTER_OK && !sr_roster_hash(scratch.head, v))
        err = SR_ROSTER_ERR_NOMEM;
    if (err || !out) {
        sr_roster_state_free(&scratch);
        return err;
    }
    scratch.exists = true;
    scratch.version = v->version;
    *out = scratch;
    return SR_ROSTER_OK;
}

sr_roster_err sr_roster_check(const sr_roster_state *state, const sr_roster_version *v)
{
    return check_and_build(state, v, NULL);
}

sr_roster_err sr_roster_apply(sr_roster_state *state, const sr_roster_version *v)
{
    sr_roster_state next;
    sr_roster_err err = check_and_build(state, v, &next);
    if (err)
        return err;
    sr_roster_state_free(state);
    *state = next;
    return SR_ROSTER_OK;
}

/* ---- identity proof ---- */

static unsigned char *identity_msg(const char *bare_jid, const unsigned char pk[SR_KEY_BYTES],
                                   size_t *len)
{
    size_t jl = strlen(bare_jid);
    if (jl == 0 || jl > 0xffff)
        return NULL;
    size_t n = (sizeof IDENTITY_LABEL - 1) + 2 + jl + SR_KEY_BYTES;
    unsigned char *buf = malloc(n);
    if (!buf)
        return NULL;
    unsigned char *p = buf;
    memcpy(p, IDENTITY_LABEL, sizeof IDENTITY_LABEL - 1);
    p += sizeof IDENTITY_LABEL - 1;
    p = put_u16(p, jl);
    memcpy(p, bare_jid, jl);
    memcpy(p + jl, pk, SR_KEY_BYTES);
    *len = n;
    return buf;
}

bool sr_identity_proof_sign(unsigned char sig[SR_SIG_BYTES], const char *bare_jid,
                            const unsigned char pk[SR_KEY_BYTES], const unsigned char sk[64])
{
    if (!sig || !bare_jid || !pk || !sk)
        return false;
    size_t n;
    unsigned char *msg = identity_msg(bare_jid, pk, &n);
    if (!msg)
        return false;
    bool ok = crypto_sign_detached(sig, NULL, msg, n, sk) == 0;
    free(msg);
    return ok;
}

bool sr_identity_proof_verify(const unsigned char sig[SR_SIG_BYTES], const char *bare_jid,
                              const unsigned char pk[SR_KEY_BYTES])
{
    if (!sig || !bare_jid || !pk)
        return false;
    size_t n;
    unsigned char *msg = identity_msg(bare_jid, pk, &n);
    if (!msg)
        return false;
    bool ok = crypto_sign_verify_detached(sig, msg, n, pk) == 0;
    free(msg);
    return ok;
}
