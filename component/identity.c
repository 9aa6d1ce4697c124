/* Identity keys: users register the Ed25519 public key libsealroom made for
 * them (with a signature proving they hold the secret half, bound to their
 * bare JID) together with their X25519 sealing key and the bundle signature
 * binding it to that identity, and anyone may fetch a user's keys to add
 * them to a roster or seal an epoch to them. One identity per JID:
 * replacing it is refused until a signed key change exists. A row from
 * before sealing keys (no box key) gains one when the same identity key
 * registers again. */
#include <stdlib.h>
#include <string.h>

#include "e2echeck.h"
#include "jid.h"
#include "log.h"
#include "service.h"
#include "stanza.h"

typedef struct ident_req {
    rooms *r;
    xmpp_stanza_t *iq;
    unsigned char pk[SR_KEY_BYTES];
    unsigned char box[SR_KEY_BYTES];
    char jid[SR_BARE_JID_MAX];
} ident_req;

static void registered(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    ident_req *q = arg;
    rooms *r = q->r;
    unsigned char stored[SR_KEY_BYTES], stored_box[SR_KEY_BYTES];
    r->writes_in_flight--;
    if (!ok || nres != 2) {
        log_error(q->jid, "storing identity failed: %s", err ? err : "?");
        svc_error(r, q->iq, svc_jid(r), "wait", "internal-server-error", NULL,
                  "the identity could not be stored; try again");
    } else if (PQntuples(res[1]) != 1 ||
               svc_bytea(res[1], 0, 0, stored, sizeof stored) != SR_KEY_BYTES ||
               memcmp(stored, q->pk, SR_KEY_BYTES) != 0) {
        svc_error(r, q->iq, svc_jid(r), "cancel", "conflict", NULL,
                  "a different identity key is already registered for this JID");
    } else if (svc_bytea(res[1], 0, 1, stored_box, sizeof stored_box) != SR_KEY_BYTES ||
               memcmp(stored_box, q->box, SR_KEY_BYTES) != 0) {
        svc_error(r, q->iq, svc_jid(r), "cancel", "conflict", NULL,
                  "a different sealing key (box-key) is already registered for this JID");
    } else {
        log_info(q->jid, "identity registered");
        svc_send(r, st_iq_result(q->iq, svc_jid(r)));
    }
    xmpp_stanza_release(q->iq);
    free(q);
}

static void fetched(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    ident_req *q = arg;
    rooms *r = q->r;
    if (!ok || nres != 1) {
        svc_error(r, q->iq, svc_jid(r), "wait", "internal-server-error", NULL,
                  "identity lookup failed; try again");
    } else if (PQntuples(res[0]) == 0) {
        svc_error(r, q->iq, svc_jid(r), "cancel", "item-not-found", "unknown-identity",
                  "no identity is registered for that JID");
    } else {
        xmpp_stanza_t *reply = st_iq_result(q->iq, svc_jid(r));
        xmpp_stanza_t *id = reply ? st_add(reply, "identity", NS_SEALROOM) : NULL;
        unsigned char pkb[SR_KEY_BYTES], sigb[SR_SIG_BYTES], boxb[SR_KEY_BYTES],
            bsigb[SR_SIG_BYTES];
        bool good = svc_bytea(res[0], 0, 0, pkb, sizeof pkb) == SR_KEY_BYTES &&
                    svc_bytea(res[0], 0, 1, sigb, sizeof sigb) == SR_SIG_BYTES;
        /* Rows from before sealing keys have none to give. */
        bool bundle = good && !PQgetisnull(res[0], 0, 2) &&
                      svc_bytea(res[0], 0, 2, boxb, sizeof boxb) == SR_KEY_BYTES &&
                      svc_bytea(res[0], 0, 3, bsigb, sizeof bsigb) == SR_SIG_BYTES;
        char *pk = good ? st_b64_encode(pkb, sizeof pkb) : NULL;
        char *sig = good ? st_b64_encode(sigb, sizeof sigb) : NULL;
        char *box = bundle ? st_b64_encode(boxb, sizeof boxb) : NULL;
        char *bsig = bundle ? st_b64_encode(bsigb, sizeof bsigb) : NULL;
        if (id && pk && sig && (!bundle || (box && bsig))) {
            xmpp_stanza_set_attribute(id, "jid", q->jid);
            xmpp_stanza_set_attribute(id, "key", pk);
            xmpp_stanza_set_attribute(id, "sig", sig);
            if (bundle) {
                xmpp_stanza_set_attribute(id, "box-key", box);
                xmpp_stanza_set_attribute(id, "bundle-sig", bsig);
            }
            svc_send(r, reply);
        } else {
            if (reply) xmpp_stanza_release(reply);
            svc_error(r, q->iq, svc_jid(r), "wait", "resource-constraint", NULL, "out of memory");
        }
        free(pk);
        free(sig);
        free(box);
        free(bsig);
    }
    (void)err;
    xmpp_stanza_release(q->iq);
    free(q);
}

void identity_handle_iq(rooms *r, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    const char *type = xmpp_stanza_get_type(iq);
    ident_req *q = calloc(1, sizeof *q);
    if (!q) {
        svc_error(r, iq, svc_jid(r), "wait", "resource-constraint", NULL, "out of memory");
        return;
    }
    q->r = r;
    if (strcmp(type, "set") == 0) {
        unsigned char sig[SR_SIG_BYTES], bsig[SR_SIG_BYTES];
        if (!svc_sender_bare(iq, q->jid, sizeof q->jid)) {
            svc_error(r, iq, svc_jid(r), "modify", "jid-malformed", NULL, "bad sender");
            goto drop;
        }
        if (!st_b64_decode_exact(q->pk, SR_KEY_BYTES, xmpp_stanza_get_attribute(el, "key")) ||
            !st_b64_decode_exact(sig, SR_SIG_BYTES, xmpp_stanza_get_attribute(el, "sig"))) {
            svc_error(r, iq, svc_jid(r), "modify", "bad-request", NULL,
                      "identity needs key (32 bytes) and sig (64 bytes) in base64");
            goto drop;
        }
        if (!st_b64_decode_exact(q->box, SR_KEY_BYTES, xmpp_stanza_get_attribute(el, "box-key")) ||
            !st_b64_decode_exact(bsig, SR_SIG_BYTES,
                                 xmpp_stanza_get_attribute(el, "bundle-sig"))) {
            svc_error(r, iq, svc_jid(r), "modify", "bad-request", NULL,
                      "identity needs box-key (32 bytes) and bundle-sig (64 bytes) in base64");
            goto drop;
        }
        if (!sr_identity_proof_verify(sig, q->jid, q->pk)) {
            svc_error(r, iq, svc_jid(r), "modify", "not-acceptable", "bad-signature",
                      "the proof signature does not verify for this JID and key");
            goto drop;
        }
        if (!ec_bundle_verify(bsig, q->jid, q->pk, q->box)) {
            svc_error(r, iq, svc_jid(r), "modify", "not-acceptable", "bad-signature",
                      "the bundle signature does not verify for this JID, key and box-key");
            goto drop;
        }
        db_unit *u = db_unit_new();
        if (!u) goto oom;
        const char *vals[5] = {q->jid, (const char *)q->pk, (const char *)sig,
                               (const char *)q->box, (const char *)bsig};
        int lens[5] = {-1, SR_KEY_BYTES, SR_SIG_BYTES, SR_KEY_BYTES, SR_SIG_BYTES};
        int fmts[5] = {0, 1, 1, 1, 1};
        const char *vals2[1] = {q->jid};
        if (db_unit_add(u,
                        "INSERT INTO identities (jid, sign_pk, proof, box_pk, bundle_sig) "
                        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (jid) DO UPDATE SET "
                        "box_pk = EXCLUDED.box_pk, bundle_sig = EXCLUDED.bundle_sig "
                        "WHERE identities.box_pk IS NULL AND identities.sign_pk = EXCLUDED.sign_pk",
                        5, vals, lens, fmts) != 0 ||
            db_unit_add(u, "SELECT sign_pk, box_pk FROM identities WHERE jid = $1", 1, vals2, NULL,
                        NULL) != 0) {
            db_unit_free(u);
            goto oom;
        }
        q->iq = xmpp_stanza_copy(iq);
        if (!q->iq) {
            db_unit_free(u);
            goto oom;
        }
        r->writes_in_flight++;
        db_submit(r->db, u, true, registered, q);
        return;
    }
    const char *who = xmpp_stanza_get_attribute(el, "jid");
    if (!who || !sr_jid_normalise_bare(q->jid, sizeof q->jid, who)) {
        svc_error(r, iq, svc_jid(r), "modify", "bad-request", NULL,
                  "identity query needs a valid jid attribute");
        goto drop;
    }
    q->iq = xmpp_stanza_copy(iq);
    if (!q->iq) goto oom;
    const char *vals[1] = {q->jid};
    db_read1(r->db, "SELECT sign_pk, proof, box_pk, bundle_sig FROM identities WHERE jid = $1", 1,
             vals, NULL, NULL, fetched, q);
    return;
oom:
    svc_error(r, iq, svc_jid(r), "wait", "resource-constraint", NULL, "out of memory");
drop:
    free(q);
}
