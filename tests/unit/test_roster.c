/* Unit tests for proto/roster.c: canonical bytes (with the fixed test vector
 * quoted by the XEP), hashing, signing, and every rule of the roster chain. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/b64.h"
#include "proto/roster.h"

#define ROOM "team@rooms.localhost"

typedef struct user {
    const char *jid;
    unsigned char pk[32], sk[64];
} user;

static user alice = {.jid = "alice@localhost"}, bob = {.jid = "bob@localhost"},
            carol = {.jid = "carol@localhost"},
            dave = {.jid = "dave@localhost"}, erin = {.jid = "erin@localhost"};

static void make_user(user *u, unsigned char seed_byte)
{
    unsigned char seed[32];
    memset(seed, seed_byte, sizeof seed);
    crypto_sign_seed_keypair(u->pk, u->sk, seed);
}

static int setup(void **state)
{
    if (sodium_init() < 0)
        return -1;
    make_user(&alice, 1);
    make_user(&bob, 2);
    make_user(&carol, 3);
    make_user(&dave, 4);
    make_user(&erin, 5);
    return 0;
}

static sr_roster_version *new_version(const sr_roster_state *st, const user *signer)
{
    sr_roster_version *v = calloc(1, sizeof *v);
    assert_non_null(v);
    strcpy(v->room, ROOM);
    strcpy(v->signer, signer->jid);
    if (st->exists) {
        v->version = st->version + 1;
        memcpy(v->prev, st->head, 32);
    }
    return v;
}

static void op_add(sr_roster_version *v, const user *u, sr_role role)
{
    sr_roster_op *op = &v->ops[v->nops++];
    op->kind = SR_OP_ADD;
    strcpy(op->jid, u->jid);
    op->role = role;
    memcpy(op->key, u->pk, 32);
}

static void op_remove(sr_roster_version *v, const user *u)
{
    sr_roster_op *op = &v->ops[v->nops++];
    op->kind = SR_OP_REMOVE;
    strcpy(op->jid, u->jid);
}

static void op_role(sr_roster_version *v, const user *u, sr_role role)
{
    sr_roster_op *op = &v->ops[v->nops++];
    op->kind = SR_OP_ROLE;
    strcpy(op->jid, u->jid);
    op->role = role;
}

static void sign_as(sr_roster_version *v, const user *u)
{
    assert_true(sr_roster_sign(v, u->sk));
}

/* Room with alice owner, bob admin, carol member (versions 0 and 1). */
static void build_room(sr_roster_state *st)
{
    sr_roster_state_init(st);
    sr_roster_version *v = new_version(st, &alice);
    op_add(v, &alice, SR_ROLE_OWNER);
    sign_as(v, &alice);
    assert_int_equal(sr_roster_apply(st, v), SR_ROSTER_OK);
    free(v);
    v = new_version(st, &alice);
    op_add(v, &bob, SR_ROLE_ADMIN);
    op_add(v, &carol, SR_ROLE_MEMBER);
    sign_as(v, &alice);
    assert_int_equal(sr_roster_apply(st, v), SR_ROSTER_OK);
    free(v);
}

static void hex(char *out, const unsigned char *in, size_t n)
{
    sodium_bin2hex(out, n * 2 + 1, in, n);
}

/* Test vector for the XEP (cross-checked with Python's hashlib.blake2b).
 * Alice's key comes from the seed 32 x 0x01 (crypto_sign_seed_keypair);
 * version 0 of team@rooms.localhost, signed by alice@localhost, adds
 * alice@localhost as owner with that key.
 *
 * public key  8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c
 *             (base64 iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=)
 * canonical   7365616c726f6f6d2d726f737465722d7630     "sealroom-roster-v0"
 *             0014 7465616d40726f6f6d732e6c6f63616c686f7374   room
 *             0000000000000000                         version 0
 *             00000000000000000000000000000000
 *             00000000000000000000000000000000         prev (zeros)
 *             000f 616c696365406c6f63616c686f7374      signer
 *             0001                                     one op
 *             01 000f 616c696365406c6f63616c686f7374 03   add alice owner
 *             8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c
 * signature   886a42744a0610fb9990fa212882ff0bcaa67d6c5a186de469a328399bb0b64f
 *             847c77afe5ea1f98ab0108f22e621e90c3a576d029de430f4f56f04d2cd81006
 *             (base64 iGpCdEoGEPuZkPohKIL/C8qmfWxaGG3kaaMoOZuwtk+EfHev5eofmKsBCPIuYh6Qw6V20CneQw9PVvBNLNgQBg==)
 * hash        21e1b4e48793a1521c76c1f259ac05cbd16b5f51d7c18321aa1cfaf6dd3ec9c7
 *             (base64 IeG05IeToVIcdsHyWawFy9FrX1HXwYMhqhz69t0+ycc=)
 */
static void test_vector(void **state)
{
    sr_roster_state st;
    sr_roster_state_init(&st);
    sr_roster_version *v = new_version(&st, &alice);
    op_add(v, &alice, SR_ROLE_OWNER);
    sign_as(v, &alice);

    unsigned char buf[512], hash[32];
    size_t n = sr_roster_canonical(buf, sizeof buf, v);
    assert_int_equal(n, sr_roster_canonical_len(v));
    char hx[1025];
    hex(hx, alice.pk, 32);
    assert_string_equal(hx, "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c");
    printf("public key %s\n", hx);
    hex(hx, buf, n);
    printf("canonical  %s\n", hx);
    assert_string_equal(hx, "7365616c726f6f6d2d726f737465722d76300014"
                            "7465616d40726f6f6d732e6c6f63616c686f7374"
                            "0000000000000000"
                            "0000000000000000000000000000000000000000000000000000000000000000"
                            "000f616c696365406c6f63616c686f7374"
                            "0001"
                            "01" "000f616c696365406c6f63616c686f7374" "03"
                            "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c");
    hex(hx, v->sig, 64);
    printf("signature  %s\n", hx);
    assert_string_equal(hx, "886a42744a0610fb9990fa212882ff0bcaa67d6c5a186de469a328399bb0b64f"
                            "847c77afe5ea1f98ab0108f22e621e90c3a576d029de430f4f56f04d2cd81006");
    assert_true(sr_roster_hash(hash, v));
    hex(hx, hash, 32);
    printf("hash       %s\n", hx);
    assert_string_equal(hx, "21e1b4e48793a1521c76c1f259ac05cbd16b5f51d7c18321aa1cfaf6dd3ec9c7");
    char b64[128];
    assert_true(sr_b64_encode(b64, sizeof b64, hash, 32));
    assert_string_equal(b64, "IeG05IeToVIcdsHyWawFy9FrX1HXwYMhqhz69t0+ycc=");

    /* The hash is BLAKE2b-256 of canonical ‖ sig, computed independently. */
    unsigned char both[512], h2[32];
    memcpy(both, buf, n);
    memcpy(both + n, v->sig, 64);
    crypto_generichash(h2, 32, both, n + 64, NULL, 0);
    assert_memory_equal(hash, h2, 32);
    assert_int_equal(crypto_sign_verify_detached(v->sig, buf, n, alice.pk), 0);

    assert_int_equal(sr_roster_apply(&st, v), SR_ROSTER_OK);
    assert_memory_equal(st.head, hash, 32);
    sr_roster_state_free(&st);
    free(v);
}

static void test_canonical_round_trip(void **state)
{
    sr_roster_state st;
    build_room(&st);
    sr_roster_version *v = new_version(&st, &alice);
    op_add(v, &dave, SR_ROLE_MEMBER);
    op_remove(v, &carol);
    op_role(v, &bob, SR_ROLE_OWNER);
    sign_as(v, &alice);
    size_t n = sr_roster_canonical_len(v);
    unsigned char *buf = malloc(n), *buf2 = malloc(n);
    assert_int_equal(sr_roster_canonical(buf, n, v), n);
    assert_int_equal(sr_roster_canonical(buf, n - 1, v), 0);

    sr_roster_version *w = calloc(1, sizeof *w);
    assert_true(sr_roster_from_canonical(w, buf, n));
    assert_string_equal(w->room, ROOM);
    assert_string_equal(w->signer, alice.jid);
    assert_int_equal(w->version, 2);
    assert_int_equal(w->nops, 3);
    assert_int_equal(w->ops[1].kind, SR_OP_REMOVE);
    assert_string_equal(w->ops[1].jid, carol.jid);
    assert_int_equal(w->ops[2].role, SR_ROLE_OWNER);
    assert_memory_equal(w->prev, st.head, 32);
    assert_int_equal(sr_roster_canonical(buf2, n, w), n);
    assert_memory_equal(buf, buf2, n);
    memcpy(w->sig, v->sig, 64);
    assert_int_equal(sr_roster_check(&st, w), SR_ROSTER_OK);

    /* Truncated, extended and mislabelled input is refused. */
    assert_false(sr_roster_from_canonical(w, buf, n - 1));
    unsigned char *longer = malloc(n + 1);
    memcpy(longer, buf, n);
    longer[n] = 0;
    assert_false(sr_roster_from_canonical(w, longer, n + 1));
    buf[0] ^= 1;
    assert_false(sr_roster_from_canonical(w, buf, n));
    free(longer);
    free(buf);
    free(buf2);
    free(w);
    free(v);
    sr_roster_state_free(&st);
}

static void test_chain(void **state)
{
    sr_roster_state st;
    build_room(&st);
    assert_int_equal(st.version, 1);
    assert_int_equal(st.nmembers, 3);
    /* Members are kept sorted by JID. */
    assert_string_equal(st.members[0].jid, alice.jid);
    assert_string_equal(st.members[1].jid, bob.jid);
    assert_string_equal(st.members[2].jid, carol.jid);

    /* v2: bob (admin) adds dave and erin as members. */
    sr_roster_version *v = new_version(&st, &bob);
    op_add(v, &erin, SR_ROLE_MEMBER);
    op_add(v, &dave, SR_ROLE_MEMBER);
    sign_as(v, &bob);
    unsigned char h2[32];
    assert_true(sr_roster_hash(h2, v));
    assert_int_equal(sr_roster_apply(&st, v), SR_ROSTER_OK);
    assert_memory_equal(st.head, h2, 32);
    free(v);

    /* v3: alice promotes dave to admin and removes carol. */
    v = new_version(&st, &alice);
    op_role(v, &dave, SR_ROLE_ADMIN);
    op_remove(v, &carol);
    sign_as(v, &alice);
    assert_int_equal(sr_roster_apply(&st, v), SR_ROSTER_OK);
    free(v);

    /* v4: erin leaves on her own. */
    v = new_version(&st, &erin);
    op_remove(v, &erin);
    sign_as(v, &erin);
    assert_int_equal(sr_roster_apply(&st, v), SR_ROSTER_OK);
    free(v);

    assert_int_equal(st.version, 4);
    assert_int_equal(st.nmembers, 3);
    assert_null(sr_roster_find(&st, carol.jid));
    assert_null(sr_roster_find(&st, erin.jid));
    assert_int_equal(sr_roster_find(&st, dave.jid)->role, SR_ROLE_ADMIN);
    assert_memory_equal(sr_roster_find(&st, dave.jid)->key, dave.pk, 32);
    assert_int_equal(sr_roster_find(&st, alice.jid)->role, SR_ROLE_OWNER);

    sr_roster_state copy;
    assert_int_equal(sr_roster_state_copy(&copy, &st), SR_ROSTER_OK);
    assert_int_equal(copy.nmembers, st.nmembers);
    assert_memory_equal(copy.head, st.head, 32);
    sr_roster_state_free(&copy);
    sr_roster_state_free(&st);
}

/* Checks that v is refused with err, and that apply leaves state unchanged. */
static void expect_reject(sr_roster_state *st, sr_roster_version *v, sr_roster_err err)
{
    uint64_t ver = st->version;
    size_t n = st->nmembers;
    unsigned char head[32];
    memcpy(head, st->head, 32);
    assert_int_equal(sr_roster_check(st, v), err);
    assert_int_equal(sr_roster_apply(st, v), err);
    assert_int_equal(st->version, ver);
    assert_int_equal(st->nmembers, n);
    assert_memory_equal(st->head, head, 32);
    free(v);
}

static void test_rejections(void **state)
{
    sr_roster_state st;
    build_room(&st);
    sr_roster_version *v;

    /* stale: same version number again, and a jump ahead */
    v = new_version(&st, &alice);
    v->version = st.version;
    op_add(v, &dave, SR_ROLE_MEMBER);
    sign_as(v, &alice);
    expect_reject(&st, v, SR_ROSTER_ERR_STALE);
    v = new_version(&st, &alice);
    v->version += 1;
    op_add(v, &dave, SR_ROLE_MEMBER);
    sign_as(v, &alice);
    expect_reject(&st, v, SR_ROSTER_ERR_STALE);

    /* wrong prev */
    v = new_version(&st, &alice);
    v->prev[5] ^= 0x40;
    op_add(v, &dave, SR_ROLE_MEMBER);
    sign_as(v, &alice);
    expect_reject(&st, v, SR_ROSTER_ERR_CHAIN);

    /* signed by someone else's key */
    v = new_version(&st, &alice);
    op_add(v, &dave, SR_ROLE_MEMBER);
    sign_as(v, &bob);
    expect_reject(&st, v, SR_ROSTER_ERR_SIGNATURE);

    /* flipped byte in the signature */
    v = new_version(&st, &alice);
    op_add(v, &dave, SR_ROLE_MEMBER);
    sign_as(v, &alice);
    v->sig[10] ^= 1;
    expect_reject(&st, v, SR_ROSTER_ERR_SIGNATURE);

    /* flipped byte inside the canonical bytes (dave's key), parsed back */
    v = new_version(&st, &alice);
    op_add(v, &dave, SR_ROLE_MEMBER);
    sign_as(v, &alice);
    {
        size_t n = sr_roster_canonical_len(v);
        unsigned char *buf = malloc(n);
        assert_int_equal(sr_roster_canonical(buf, n, v), n);
        buf[n - 3] ^= 0x80;
        sr_roster_version *w = calloc(1, sizeof *w);
        assert_true(sr_roster_from_canonical(w, buf, n));
        memcpy(w->sig, v->sig, 64);
        free(buf);
        free(v);
        expect_reject(&st, w, SR_ROSTER_ERR_SIGNATURE);
    }

    /* non-admin signer (carol is a member), and a non-member signer */
    v = new_version(&st, &carol);
    op_add(v, &dave, SR_ROLE_MEMBER);
    sign_as(v, &carol);
    expect_reject(&st, v, SR_ROSTER_ERR_SIGNER);
    v = new_version(&st, &erin);
    op_add(v, &dave, SR_ROLE_MEMBER);
    sign_as(v, &erin);
    expect_reject(&st, v, SR_ROSTER_ERR_SIGNER);
    /* a member removing someone else is not a self-removal */
    v = new_version(&st, &carol);
    op_remove(v, &bob);
    sign_as(v, &carol);
    expect_reject(&st, v, SR_ROSTER_ERR_SIGNER);

    /* admin touching an owner, adding an admin, promoting a member */
    v = new_version(&st, &bob);
    op_remove(v, &alice);
    sign_as(v, &bob);
    expect_reject(&st, v, SR_ROSTER_ERR_SIGNER);
    v = new_version(&st, &bob);
    op_add(v, &dave, SR_ROLE_ADMIN);
    sign_as(v, &bob);
    expect_reject(&st, v, SR_ROSTER_ERR_SIGNER);
    v = new_version(&st, &bob);
    op_role(v, &carol, SR_ROLE_ADMIN);
    sign_as(v, &bob);
    expect_reject(&st, v, SR_ROSTER_ERR_SIGNER);

    /* removing the last owner, and demoting it */
    v = new_version(&st, &alice);
    op_remove(v, &alice);
    sign_as(v, &alice);
    expect_reject(&st, v, SR_ROSTER_ERR_RULE);
    v = new_version(&st, &alice);
    op_role(v, &alice, SR_ROLE_ADMIN);
    sign_as(v, &alice);
    expect_reject(&st, v, SR_ROSTER_ERR_RULE);

    /* add existing, remove absent, role of absent, role unchanged */
    v = new_version(&st, &alice);
    op_add(v, &carol, SR_ROLE_MEMBER);
    sign_as(v, &alice);
    expect_reject(&st, v, SR_ROSTER_ERR_RULE);
    v = new_version(&st, &alice);
    op_remove(v, &dave);
    sign_as(v, &alice);
    expect_reject(&st, v, SR_ROSTER_ERR_RULE);
    v = new_version(&st, &alice);
    op_role(v, &dave, SR_ROLE_ADMIN);
    sign_as(v, &alice);
    expect_reject(&st, v, SR_ROSTER_ERR_RULE);
    v = new_version(&st, &alice);
    op_role(v, &carol, SR_ROLE_MEMBER);
    sign_as(v, &alice);
    expect_reject(&st, v, SR_ROSTER_ERR_RULE);

    /* duplicate JID within one version */
    v = new_version(&st, &alice);
    op_add(v, &dave, SR_ROLE_MEMBER);
    op_role(v, &dave, SR_ROLE_ADMIN);
    sign_as(v, &alice);
    expect_reject(&st, v, SR_ROSTER_ERR_MALFORMED);

    /* zero ops, 65 ops */
    v = new_version(&st, &alice);
    sign_as(v, &alice);
    expect_reject(&st, v, SR_ROSTER_ERR_MALFORMED);
    v = new_version(&st, &alice);
    for (int i = 0; i < SR_ROSTER_MAX_OPS; i++) {
        sr_roster_op *op = &v->ops[v->nops++];
        op->kind = SR_OP_ADD;
        snprintf(op->jid, sizeof op->jid, "user%d@localhost", i);
        op->role = SR_ROLE_MEMBER;
    }
    sign_as(v, &alice);
    assert_int_equal(sr_roster_check(&st, v), SR_ROSTER_OK); /* 64 is fine */
    v->nops = SR_ROSTER_MAX_OPS + 1;
    assert_int_equal(sr_roster_canonical_len(v), 0);
    assert_false(sr_roster_sign(v, alice.sk));
    expect_reject(&st, v, SR_ROSTER_ERR_MALFORMED);

    /* invalid roles, keys on non-add ops, un-normalised JIDs */
    v = new_version(&st, &alice);
    op_add(v, &dave, SR_ROLE_NONE);
    sign_as(v, &alice);
    expect_reject(&st, v, SR_ROSTER_ERR_MALFORMED);
    v = new_version(&st, &alice);
    op_add(v, &dave, (sr_role)4);
    sign_as(v, &alice);
    expect_reject(&st, v, SR_ROSTER_ERR_MALFORMED);
    v = new_version(&st, &alice);
    op_remove(v, &carol);
    v->ops[0].role = SR_ROLE_MEMBER;
    sign_as(v, &alice);
    expect_reject(&st, v, SR_ROSTER_ERR_MALFORMED);
    v = new_version(&st, &alice);
    op_remove(v, &carol);
    v->ops[0].key[0] = 1;
    sign_as(v, &alice);
    expect_reject(&st, v, SR_ROSTER_ERR_MALFORMED);
    v = new_version(&st, &alice);
    op_add(v, &dave, SR_ROLE_MEMBER);
    strcpy(v->ops[0].jid, "Dave@localhost");
    sign_as(v, &alice);
    expect_reject(&st, v, SR_ROSTER_ERR_MALFORMED);
    v = new_version(&st, &alice);
    op_add(v, &dave, SR_ROLE_MEMBER);
    strcpy(v->ops[0].jid, "dave@localhost/phone");
    sign_as(v, &alice);
    expect_reject(&st, v, SR_ROSTER_ERR_MALFORMED);
    v = new_version(&st, &alice);
    op_add(v, &dave, SR_ROLE_MEMBER);
    v->ops[0].kind = (sr_op_kind)7;
    expect_reject(&st, v, SR_ROSTER_ERR_MALFORMED);

    /* self-removal is allowed for a plain member ... */
    v = new_version(&st, &carol);
    op_remove(v, &carol);
    sign_as(v, &carol);
    assert_int_equal(sr_roster_apply(&st, v), SR_ROSTER_OK);
    free(v);
    /* ... and for an admin, but not for the last owner */
    v = new_version(&st, &bob);
    op_remove(v, &bob);
    sign_as(v, &bob);
    assert_int_equal(sr_roster_check(&st, v), SR_ROSTER_OK);
    free(v);
    v = new_version(&st, &alice);
    op_remove(v, &alice);
    sign_as(v, &alice);
    expect_reject(&st, v, SR_ROSTER_ERR_RULE);
    sr_roster_state_free(&st);
}

static void test_version_zero(void **state)
{
    sr_roster_state st;
    sr_roster_state_init(&st);
    sr_roster_version *v;

    /* creator must add itself as owner */
    v = new_version(&st, &alice);
    op_add(v, &alice, SR_ROLE_ADMIN);
    sign_as(v, &alice);
    expect_reject(&st, v, SR_ROSTER_ERR_SIGNER);
    v = new_version(&st, &alice);
    op_add(v, &bob, SR_ROLE_OWNER);
    sign_as(v, &alice);
    expect_reject(&st, v, SR_ROSTER_ERR_SIGNER);
    /* the signature is checked with the key of the creator's add op */
    v = new_version(&st, &alice);
    op_add(v, &alice, SR_ROLE_OWNER);
    memcpy(v->ops[0].key, bob.pk, 32);
    sign_as(v, &alice);
    expect_reject(&st, v, SR_ROSTER_ERR_SIGNATURE);
    /* non-zero prev, a version other than 0 on an empty state */
    v = new_version(&st, &alice);
    op_add(v, &alice, SR_ROLE_OWNER);
    v->prev[0] = 1;
    sign_as(v, &alice);
    expect_reject(&st, v, SR_ROSTER_ERR_CHAIN);
    v = new_version(&st, &alice);
    v->version = 1;
    op_add(v, &alice, SR_ROLE_OWNER);
    sign_as(v, &alice);
    expect_reject(&st, v, SR_ROSTER_ERR_STALE);
    /* a room name without a localpart */
    v = new_version(&st, &alice);
    strcpy(v->room, "rooms.localhost");
    op_add(v, &alice, SR_ROLE_OWNER);
    sign_as(v, &alice);
    expect_reject(&st, v, SR_ROSTER_ERR_MALFORMED);
    /* version 0 may create the room with several members */
    v = new_version(&st, &alice);
    op_add(v, &alice, SR_ROLE_OWNER);
    op_add(v, &bob, SR_ROLE_MEMBER);
    sign_as(v, &alice);
    assert_int_equal(sr_roster_apply(&st, v), SR_ROSTER_OK);
    assert_true(st.exists);
    assert_int_equal(st.nmembers, 2);
    free(v);
    /* and cannot be created twice */
    v = new_version(&st, &alice);
    v->version = 0;
    memset(v->prev, 0, 32);
    op_add(v, &carol, SR_ROLE_OWNER);
    sign_as(v, &alice);
    expect_reject(&st, v, SR_ROSTER_ERR_STALE);
    sr_roster_state_free(&st);
}

static void test_identity_proof(void **state)
{
    unsigned char sig[64];
    assert_true(sr_identity_proof_sign(sig, alice.jid, alice.pk, alice.sk));
    assert_true(sr_identity_proof_verify(sig, alice.jid, alice.pk));
    assert_false(sr_identity_proof_verify(sig, bob.jid, alice.pk));
    assert_false(sr_identity_proof_verify(sig, alice.jid, bob.pk));
    sig[0] ^= 1;
    assert_false(sr_identity_proof_verify(sig, alice.jid, alice.pk));

    /* The signed message is label ‖ u16 len ‖ bare ‖ key, checked directly. */
    unsigned char msg[20 + 2 + 15 + 32];
    memcpy(msg, "sealroom-identity-v0", 20);
    msg[20] = 0;
    msg[21] = 15;
    memcpy(msg + 22, alice.jid, 15);
    memcpy(msg + 37, alice.pk, 32);
    assert_true(sr_identity_proof_sign(sig, alice.jid, alice.pk, alice.sk));
    assert_int_equal(crypto_sign_verify_detached(sig, msg, sizeof msg, alice.pk), 0);
}

static void test_b64(void **state)
{
    unsigned char out[64];
    size_t n;
    char enc[16];
    assert_true(sr_b64_encode(enc, sizeof enc, (const unsigned char *)"hello", 5));
    assert_string_equal(enc, "aGVsbG8=");
    assert_false(sr_b64_encode(enc, 8, (const unsigned char *)"hello", 5));
    assert_true(sr_b64_decode(out, sizeof out, &n, "aGVsbG8=", 8));
    assert_int_equal(n, 5);
    assert_memory_equal(out, "hello", 5);
    assert_false(sr_b64_decode(out, sizeof out, &n, "aGVsbG8", 7));
    assert_false(sr_b64_decode(out, sizeof out, &n, "aGVs bG8=", 9));
    assert_false(sr_b64_decode(out, sizeof out, &n, "aGVsbG8=aGVs", 12));
    assert_false(sr_b64_decode(out, sizeof out, &n, "aGV*bG8=", 8));
    assert_false(sr_b64_decode(out, 4, &n, "aGVsbG8=", 8));
    assert_true(sr_b64_decode(out, sizeof out, &n, "", 0));
    assert_int_equal(n, 0);
    assert_false(sr_b64_decode_exact(out, 4, "aGVsbG8="));
    assert_true(sr_b64_decode_exact(out, 5, "aGVsbG8="));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vector),         cmocka_unit_test(test_canonical_round_trip),
        cmocka_unit_test(test_chain),          cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_version_zero),   cmocka_unit_test(test_identity_proof),
        cmocka_unit_test(test_b64),
    };
    return cmocka_run_group_tests_name("roster", tests, setup, NULL);
}
