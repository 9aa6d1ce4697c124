/* The signed roster chain (xep/sealroom.xml, "The Roster Chain"): canonical encoding,
 * hashing, signing, and the rules that decide whether a version may follow
 * the current state. Shared by sealroomd (which refuses bad versions) and
 * libsealroom (which verifies the chain it is handed). Pure code, no I/O. */
#ifndef SEALROOM_PROTO_ROSTER_H
#define SEALROOM_PROTO_ROSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SR_ROSTER_MAX_OPS 64
#define SR_ROSTER_HASH_BYTES 32
#define SR_KEY_BYTES 32
#define SR_SIG_BYTES 64
#define SR_BARE_JID_MAX 2048

typedef enum { SR_ROLE_NONE = 0, SR_ROLE_MEMBER = 1, SR_ROLE_ADMIN = 2, SR_ROLE_OWNER = 3 } sr_role;
typedef enum { SR_OP_ADD = 1, SR_OP_REMOVE = 2, SR_OP_ROLE = 3 } sr_op_kind;

typedef struct sr_roster_op {
    sr_op_kind kind;
    char jid[SR_BARE_JID_MAX];        /* normalised bare JID */
    sr_role role;                     /* SR_ROLE_NONE for remove */
    unsigned char key[SR_KEY_BYTES];  /* zeros unless add */
} sr_roster_op;

/* About 135 KiB: allocate on the heap, never on the stack. */
typedef struct sr_roster_version {
    char room[SR_BARE_JID_MAX];
    uint64_t version;
    unsigned char prev[SR_ROSTER_HASH_BYTES];
    char signer[SR_BARE_JID_MAX];
    unsigned nops;
    sr_roster_op ops[SR_ROSTER_MAX_OPS];
    unsigned char sig[SR_SIG_BYTES];
} sr_roster_version;

typedef struct sr_member {
    char jid[SR_BARE_JID_MAX];
    sr_role role;
    unsigned char key[SR_KEY_BYTES];
} sr_member;

/* The membership after some version: a growable array sorted by JID. */
typedef struct sr_roster_state {
    bool exists;          /* false before version 0 */
    uint64_t version;
    unsigned char head[SR_ROSTER_HASH_BYTES];
    size_t nmembers, cap;
    sr_member *members;
} sr_roster_state;

typedef enum {
    SR_ROSTER_OK = 0,
    SR_ROSTER_ERR_MALFORMED,   /* bad counts, lengths, duplicate JIDs, bad role */
    SR_ROSTER_ERR_STALE,       /* version is not state.version + 1 */
    SR_ROSTER_ERR_CHAIN,       /* prev does not match the head hash */
    SR_ROSTER_ERR_SIGNER,      /* signer lacks the role for these ops */
    SR_ROSTER_ERR_SIGNATURE,   /* Ed25519 signature invalid */
    SR_ROSTER_ERR_RULE,        /* op breaks a rule (add existing, remove absent, last owner) */
    SR_ROSTER_ERR_NOMEM
} sr_roster_err;

const char *sr_roster_err_text(sr_roster_err err);
const char *sr_role_name(sr_role role);      /* "member", "admin", "owner", or "none" */
sr_role sr_role_parse(const char *name);     /* SR_ROLE_NONE when unknown */

/* Canonical bytes (xep/sealroom.xml). Returns the length written, or 0 if outlen is
 * too small. sr_roster_canonical_len gives the exact size needed. */
size_t sr_roster_canonical_len(const sr_roster_version *v);
size_t sr_roster_canonical(unsigned char *out, size_t outlen, const sr_roster_version *v);

/* Parse canonical bytes back (signature not included) — used by the
 * component to re-render stored versions. */
bool sr_roster_from_canonical(sr_roster_version *v, const unsigned char *in, size_t inlen);

/* hash = BLAKE2b-256(canonical ‖ sig) */
bool sr_roster_hash(unsigned char hash[SR_ROSTER_HASH_BYTES], const sr_roster_version *v);

/* Fill v->sig using the Ed25519 secret key (64 bytes, libsodium layout). */
bool sr_roster_sign(sr_roster_version *v, const unsigned char sk[64]);

/* Check every rule for v following state; does not change state. */
sr_roster_err sr_roster_check(const sr_roster_state *state, const sr_roster_version *v);

/* sr_roster_check, then apply v to state (version, head, members). On error
 * state is unchanged. */
sr_roster_err sr_roster_apply(sr_roster_state *state, const sr_roster_version *v);

void sr_roster_state_init(sr_roster_state *state);
void sr_roster_state_free(sr_roster_state *state);
const sr_member *sr_roster_find(const sr_roster_state *state, const char *bare_jid);
sr_roster_err sr_roster_state_copy(sr_roster_state *dst, const sr_roster_state *src);

/* Identity proof: Ed25519 over "sealroom-identity-v0" ‖ u16 len ‖ bare ‖ key. */
bool sr_identity_proof_sign(unsigned char sig[SR_SIG_BYTES], const char *bare_jid,
                            const unsigned char pk[SR_KEY_BYTES], const unsigned char sk[64]);
bool sr_identity_proof_verify(const unsigned char sig[SR_SIG_BYTES], const char *bare_jid,
                              const unsigned char pk[SR_KEY_BYTES]);

#endif
