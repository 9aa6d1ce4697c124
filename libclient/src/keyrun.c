/* Our part in a room's multi-cast key distribution run (the DMKD wire
 * protocol, urn:xmpp:sealroom:keys:0; the arithmetic is e2e/dmkd.h): the
 * round1, round2, round3 and failed headlines the room sends this session,
 * each checked against our verified roster chain before we answer with an
 * IQ set. A check that fails ends our part at once: the run state is
 * wiped, the app gets SEALROOM_EVENT_KEY_AGREEMENT_FAILED and the room an
 * <abort/>, and nothing is installed. Our answers are kept so that a
 * repeated headline of the same run (the room resends after a restart)
 * gets the same answer, and a repeat that differs is an equivocation. Our
 * confirmation carries the epoch's check header k_e·P_c(room) beside KC_e
 * (archive-wire.md). The epoch a run makes is installed (keys.c) only when
 * the room announces it with the KC_e and check header we derived
 * ourselves. */
#include "internal.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2e/dmkd.h"
#include "e2e/envelope.h"
#include "proto/b64.h"
#include "proto/jid.h"

typedef enum {
    RUN_PARKED = 0, /* round 1 received, waiting for a roster sync */
    RUN_ROUND1,     /* round 1 answered */
    RUN_ROUND2,     /* round 2 answered */
    RUN_CONFIRMED   /* key derived and confirmed; waiting for the room's epoch */
} run_phase;

/* A ring member as round 2 names it. */
typedef struct run_peer {
    char jid[SR_BARE_JID_MAX];
    unsigned char R[SR_E2E_POINT_BYTES], c[SR_E2E_DMKD_BYTES], sig[SR_E2E_SIG_BYTES];
} run_peer;

/* sodium_malloc'd: m holds r, k and K^l, secret holds S_e. */
typedef struct sr_keyrun sr_keyrun;
struct sr_keyrun {
    unsigned char id[SR_E2E_DMKD_RUN_ID_BYTES];
    uint64_t epoch, roster_version;
    unsigned char roster_hash[SR_E2E_ROSTER_HASH_BYTES];
    run_phase phase;
    bool synced;         /* parked: a sync of ours finished since */
    bool timed;          /* started_ms is known (the app gives us time) */
    uint64_t started_ms;
    sr_e2e_dmkd_member m;
    unsigned char sig1[SR_E2E_SIG_BYTES];
    /* round 2 as received, and our answer */
    unsigned char sid[SR_E2E_DMKD_BYTES];
    uint64_t n, position;
    run_peer left, right, rep;
    unsigned char T[SR_E2E_DMKD_BYTES], second[SR_E2E_DMKD_BYTES], sig2[SR_E2E_SIG_BYTES];
    /* round 3: a digest of what came, the key, and our confirmation */
    unsigned char r3_digest[32];
    unsigned char secret[SR_E2E_EPOCH_SECRET_BYTES];
    unsigned char kc[SR_E2E_KC_BYTES];
    unsigned char check[SR_E2E_POINT_BYTES]; /* H_c = k_e·P_c(room) */
    xmpp_stanza_t *confirm;
};

static void run_wipe(sr_room *room)
{
    sr_keyrun *run = room->run;
    if (!run)
        return;
    room->run = NULL;
    if (run->confirm)
        xmpp_stanza_release(run->confirm);
    sodium_free(run); /* wipes */
}

void sr_keyrun_free(sr_room *room)
{
    run_wipe(room);
}

static sr_e2e_dmkd_ctx run_ctx(const sr_room *room, const sr_keyrun *run)
{
    sr_e2e_dmkd_ctx c = {room->jid, run->epoch, run->roster_hash, run->id};
    return c;
}

static void run_id_text(char out[32], const unsigned char id[SR_E2E_DMKD_RUN_ID_BYTES])
{
    sr_b64_encode(out, 32, id, SR_E2E_DMKD_RUN_ID_BYTES);
}

/* room's run, after dropping it if it outlived SR_RUN_MAX_AGE_MS: a run
 * that old is dead on the room's side too, and its secrets must go. */
static sr_keyrun *run_current(sealroom_ctx *ctx, sr_room *room)
{
    sr_keyrun *run = room->run;
    if (!run || !ctx->have_time)
        return run;
    if (!run->timed) {
        run->timed = true;
        run->started_ms = ctx->now_ms;
        return run;
    }
    if (ctx->now_ms < run->started_ms || ctx->now_ms - run->started_ms < SR_RUN_MAX_AGE_MS)
        return run;
    sr_log(ctx, SEALROOM_LOG_INFO,
           "%s: dropping our state of the key agreement for epoch %" PRIu64
           ": older than five minutes",
           room->jid, run->epoch);
    run_wipe(room);
    return NULL;
}

bool sr_keyrun_active(sealroom_ctx *ctx, sr_room *room)
{
    return run_current(ctx, room) != NULL;
}

/* ---- talking to the room ---- */

/* Which run an answer belongs to (the state may have moved on). */
typedef struct run_ref {
    sr_room *room;
    unsigned char id[SR_E2E_DMKD_RUN_ID_BYTES];
    const char *what;
} run_ref;

static void run_answered(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                         const char *text)
{
    run_ref *ref = arg;
    sr_room *room = ref->room;
    if (rc < 0) {
        bool ours = room->run && memcmp(room->run->id, ref->id, sizeof ref->id) == 0;
        sr_log(ctx, SEALROOM_LOG_INFO, "%s: our %s was not taken: %s", room->jid, ref->what,
               text ? text : sealroom_strerror(rc));
        /* A refusal (an unknown run, a bad round) means the room goes on
         * without us; without an answer (timeout, lost link) the room may
         * still resend the round after a restart. */
        if (ours && answer)
            run_wipe(room);
    }
    free(ref);
}

/* Sends el (taken) as an IQ set of the run id to the room. A failure to
 * send is only logged: the room drops us at its deadline. */
static void run_send(sealroom_ctx *ctx, sr_room *room, const unsigned char *id, xmpp_stanza_t *el,
                     const char *what)
{
    run_ref *ref = el ? malloc(sizeof *ref) : NULL;
    if (!ref) {
        if (el)
            xmpp_stanza_release(el);
        sr_log(ctx, SEALROOM_LOG_WARN, "%s: out of memory answering the key agreement", room->jid);
        return;
    }
    ref->room = room;
    memcpy(ref->id, id, sizeof ref->id);
    ref->what = what;
    if (sr_iq_call_owned(ctx, "set", room->jid, el, run_answered, ref, free) < 0) {
        free(ref);
        sr_log(ctx, SEALROOM_LOG_WARN, "%s: could not send our %s: %s", room->jid, what,
               ctx->last_error);
    }
}

/* <name xmlns=SR_NS_KEYS run=.../>, or NULL. */
static xmpp_stanza_t *run_el(sealroom_ctx *ctx, const char *name, const unsigned char *id)
{
    char b64[32];
    run_id_text(b64, id);
    xmpp_stanza_t *el = sr_el(ctx->xmpp, name, SR_NS_KEYS);
    if (el && xmpp_stanza_set_attribute(el, "run", b64) != XMPP_EOK) {
        xmpp_stanza_release(el);
        el = NULL;
    }
    return el;
}

static bool put_b64(xmpp_stanza_t *el, const char *attr, const unsigned char *p, size_t n)
{
    char b64[128];
    return sr_b64_encode(b64, sizeof b64, p, n) &&
           xmpp_stanza_set_attribute(el, attr, b64) == XMPP_EOK;
}

static bool get_b64(xmpp_stanza_t *el, const char *attr, unsigned char *out, size_t n)
{
    return sr_b64_decode_exact(out, n, xmpp_stanza_get_attribute(el, attr));
}

static void abort_answered(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                           const char *text)
{
    const sr_room *room = arg;
    (void)answer;
    if (rc < 0)
        sr_log(ctx, SEALROOM_LOG_INFO, "%s: the room did not take our <abort/>: %s", room->jid,
               text ? text : sealroom_strerror(rc));
}

/* Our part in room's run ends on a failed check: wipe the state first (no
 * secret outlives the failure, whatever the app does in its callback),
 * tell the room (unless the run is over there already), then the app. */
static void run_fail(sealroom_ctx *ctx, sr_room *room, bool tell_room, int rc, const char *fmt,
                     ...) __attribute__((format(printf, 5, 6)));

static void run_fail(sealroom_ctx *ctx, sr_room *room, bool tell_room, int rc, const char *fmt,
                     ...)
{
    char why[384], idtext[32];
    unsigned char id[SR_E2E_DMKD_RUN_ID_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    uint64_t epoch = room->run->epoch;
    memcpy(id, room->run->id, sizeof id);
    run_id_text(idtext, id);
    run_wipe(room);
    sr_log(ctx, SEALROOM_LOG_WARN, "%s: key agreement for epoch %" PRIu64 " (run %s) FAILED: %s",
           room->jid, epoch, idtext, why);
    if (tell_room) {
        xmpp_stanza_t *el = run_el(ctx, "abort", id);
        if (el && xmpp_stanza_set_attribute(el, "reason", why) != XMPP_EOK) {
            xmpp_stanza_release(el);
            el = NULL;
        }
        if (!el || sr_iq_call(ctx, "set", room->jid, el, abort_answered, room) < 0)
            sr_log(ctx, SEALROOM_LOG_WARN, "%s: could not tell the room to abort run %s",
                   room->jid, idtext);
    }
    sr_fail(ctx, rc, "%s", why);
    sealroom_event ev = {0};
    ev.type = SEALROOM_EVENT_KEY_AGREEMENT_FAILED;
    ev.room = room->jid;
    ev.result = rc;
    ev.error_text = why;
    ev.epoch = epoch;
    sr_emit(ctx, &ev);
    sr_rekey_waiters_done(ctx, room, rc, why);
}

/* ---- round 1 ---- */

static void send_round1(sealroom_ctx *ctx, sr_room *room, const sr_keyrun *run)
{
    xmpp_stanza_t *el = run_el(ctx, "round1", run->id);
    if (el && !(put_b64(el, "R", run->m.R, sizeof run->m.R) &&
                put_b64(el, "c", run->m.c, sizeof run->m.c) &&
                put_b64(el, "sig", run->sig1, sizeof run->sig1))) {
        xmpp_stanza_release(el);
        el = NULL;
    }
    run_send(ctx, room, run->id, el, "round 1");
}

static void run_synced(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                       const char *text)
{
    sr_room *room = arg;
    (void)answer;
    room->syncing = false;
    if (rc < 0)
        sr_log(ctx, SEALROOM_LOG_WARN, "%s: roster sync for a key agreement failed: %s",
               room->jid, text ? text : sealroom_strerror(rc));
    if (room->run && room->run->phase == RUN_PARKED)
        room->run->synced = true;
    sr_keys_changed(ctx, room); /* resumes the run */
}

/* The checks of round 1 against the verified chain, then our R, c, sig. */
static void round1_go(sealroom_ctx *ctx, sr_room *room)
{
    sr_keyrun *run = room->run;
    unsigned char pk[SR_KEY_BYTES];
    const uint64_t V = run->roster_version;

    if (!room->roster_known || V > room->roster.version) {
        if (room->syncing)
            return; /* sr_keyrun_resume once it is done */
        if (!run->synced) {
            int rc = sr_sync_call(ctx, room->jid, run_synced, room);
            if (rc == SEALROOM_OK)
                room->syncing = true;
            else
                run_fail(ctx, room, true, rc, "cannot sync the roster chain: %s", ctx->last_error);
            return;
        }
        run_fail(ctx, room, true, SEALROOM_E_VERIFY,
                 "the run names roster version %" PRIu64 ", beyond our verified chain", V);
        return;
    }
    if (run->epoch == 0 || run->epoch <= room->epoch_current) {
        run_fail(ctx, room, true, SEALROOM_E_PROTOCOL,
                 "the run is for epoch %" PRIu64 " but we hold epoch %" PRIu64, run->epoch,
                 room->epoch_current);
        return;
    }
    const unsigned char *head = sr_head_at(room, V);
    if (!head || sodium_memcmp(head, run->roster_hash, sizeof run->roster_hash) != 0) {
        run_fail(ctx, room, true, SEALROOM_E_VERIFY,
                 "the roster hash of version %" PRIu64 " is not our verified chain's", V);
        return;
    }
    /* A run under an older roster than a membership change we verified
     * would give the new key to whom that change removed. */
    if (V < room->membership_version) {
        run_fail(ctx, room, true, SEALROOM_E_VERIFY,
                 "the run is at roster version %" PRIu64 ", before the membership change of %" PRIu64,
                 V, room->membership_version);
        return;
    }
    if (!sr_member_at(room, ctx->own_bare, V, pk) ||
        sodium_memcmp(pk, ctx->identity->pk, sizeof pk) != 0) {
        run_fail(ctx, room, true, SEALROOM_E_VERIFY,
                 "we are not a member with this identity at roster version %" PRIu64, V);
        return;
    }
    sr_e2e_dmkd_ctx dctx = run_ctx(room, run);
    const sr_e2e_identity *id = &ctx->identity->e2e;
    int erc = sr_e2e_dmkd_round1(&run->m, &dctx, ctx->own_bare, id->dmkd_a, id->dmkd_b, NULL, NULL);
    if (erc == SR_E2E_OK)
        erc = sr_e2e_dmkd_round1_sign(run->sig1, &dctx, ctx->own_bare, run->m.R, run->m.c,
                                      id->sign_sk);
    if (erc != SR_E2E_OK) {
        run_fail(ctx, room, true, erc == SR_E2E_ERR_NOMEM ? SEALROOM_E_NOMEM : SEALROOM_E_PROTOCOL,
                 "round 1 could not be computed: %s", sr_e2e_strerror(erc));
        return;
    }
    run->phase = RUN_ROUND1;
    sr_log(ctx, SEALROOM_LOG_INFO, "%s: taking part in the key agreement for epoch %" PRIu64,
           room->jid, run->epoch);
    send_round1(ctx, room, run);
}

static void on_round1(sealroom_ctx *ctx, sr_room *room, xmpp_stanza_t *el, const unsigned char *id)
{
    uint64_t epoch = 0, rv = 0;
    unsigned char hash[SR_E2E_ROSTER_HASH_BYTES];
    bool ok = sr_parse_u64(xmpp_stanza_get_attribute(el, "epoch"), &epoch) &&
              sr_parse_u64(xmpp_stanza_get_attribute(el, "roster-version"), &rv) &&
              get_b64(el, "roster-hash", hash, sizeof hash);
    sr_keyrun *run = room->run;
    if (run && memcmp(run->id, id, sizeof run->id) == 0) {
        if (!ok || epoch != run->epoch || rv != run->roster_version ||
            memcmp(hash, run->roster_hash, sizeof hash) != 0) {
            run_fail(ctx, room, true, SEALROOM_E_PROTOCOL,
                     "round 1 of this run came again with other values");
            return;
        }
        /* The room asks again (it restarted): the same answer. */
        if (run->phase != RUN_PARKED)
            send_round1(ctx, room, run);
        return;
    }
    if (run) {
        sr_log(ctx, SEALROOM_LOG_INFO,
               "%s: a new key agreement run replaces the one for epoch %" PRIu64, room->jid,
               run->epoch);
        run_wipe(room);
    }
    run = sodium_malloc(sizeof *run);
    if (!run) {
        sr_log(ctx, SEALROOM_LOG_WARN, "%s: out of memory for a key agreement run", room->jid);
        return;
    }
    memset(run, 0, sizeof *run);
    memcpy(run->id, id, sizeof run->id);
    run->timed = ctx->have_time;
    run->started_ms = ctx->now_ms;
    run->epoch = epoch;
    run->roster_version = rv;
    memcpy(run->roster_hash, hash, sizeof hash);
    run->phase = RUN_PARKED;
    room->run = run;
    if (!ok) {
        run_fail(ctx, room, true, SEALROOM_E_PROTOCOL, "malformed round 1");
        return;
    }
    round1_go(ctx, room);
}

void sr_keyrun_resume(sealroom_ctx *ctx, sr_room *room)
{
    sr_keyrun *run = run_current(ctx, room);
    if (run && run->phase == RUN_PARKED && !room->syncing && ctx->identity)
        round1_go(ctx, room);
}

/* ---- round 2 ---- */

static bool parse_peer(xmpp_stanza_t *el, const char *name, run_peer *p)
{
    xmpp_stanza_t *c = sr_child(el, name, NULL);
    return c && sr_jid_normalise_bare(p->jid, sizeof p->jid, xmpp_stanza_get_attribute(c, "jid")) &&
           get_b64(c, "R", p->R, sizeof p->R) && get_b64(c, "c", p->c, sizeof p->c) &&
           get_b64(c, "sig", p->sig, sizeof p->sig);
}

static bool peer_same(const run_peer *a, const run_peer *b)
{
    return strcmp(a->jid, b->jid) == 0 && memcmp(a->R, b->R, sizeof a->R) == 0 &&
           memcmp(a->c, b->c, sizeof a->c) == 0 && memcmp(a->sig, b->sig, sizeof a->sig) == 0;
}

static void send_round2(sealroom_ctx *ctx, sr_room *room, const sr_keyrun *run)
{
    xmpp_stanza_t *el = run_el(ctx, "round2", run->id);
    if (el && !(put_b64(el, "T", run->T, sizeof run->T) &&
                put_b64(el, "second", run->second, sizeof run->second) &&
                put_b64(el, "sig", run->sig2, sizeof run->sig2))) {
        xmpp_stanza_release(el);
        el = NULL;
    }
    run_send(ctx, room, run->id, el, "round 2");
}

/* Round 2 as received (three JIDs of up to 2 KiB: on the heap). */
typedef struct round2_in {
    unsigned char sid[SR_E2E_DMKD_BYTES];
    uint64_t n, position;
    run_peer left, right, rep;
} round2_in;

/* Where the ring round 2 describes cannot be the component's ring
 * (dmkd-wire.md "Phase 2"): a reason, or NULL. */
static const char *ring_flaw(const sealroom_ctx *ctx, const sr_room *room, const sr_keyrun *run,
                             const round2_in *in)
{
    const uint64_t n = in->n, pos = in->position;
    if (n < 2 || n > SR_E2E_DMKD_MAX_MEMBERS || n > room->roster.nmembers)
        return "a ring size that does not fit the roster";
    if (pos < 1 || pos > n)
        return "a position outside the ring";
    if ((strcmp(in->rep.jid, ctx->own_bare) == 0) != (pos == 1))
        return "us as the representative off position 1, or another member as it at position 1";
    if (strcmp(in->left.jid, ctx->own_bare) == 0 || strcmp(in->right.jid, ctx->own_bare) == 0)
        return "us as our own neighbour";
    if (pos == 1 && (memcmp(in->rep.R, run->m.R, sizeof in->rep.R) != 0 ||
                     memcmp(in->rep.c, run->m.c, sizeof in->rep.c) != 0 ||
                     memcmp(in->rep.sig, run->sig1, sizeof in->rep.sig) != 0))
        return "us as the representative with a round 1 that is not ours";
    if (n == 2 && !peer_same(&in->left, &in->right))
        return "two different neighbours in a ring of two";
    if (n > 2 && strcmp(in->left.jid, in->right.jid) == 0)
        return "the same member on both sides in a ring of more than two";
    if (pos != 1) {
        /* U_1 sits left of U_2 and right of U_n, nowhere else. */
        bool left_rep = strcmp(in->left.jid, in->rep.jid) == 0;
        bool right_rep = strcmp(in->right.jid, in->rep.jid) == 0;
        if (left_rep != (pos == 2) || right_rep != (pos == n))
            return "the representative at a place other than position 1";
        if ((left_rep && !peer_same(&in->left, &in->rep)) ||
            (right_rep && !peer_same(&in->right, &in->rep)))
            return "the representative with two different round 1s";
    }
    return NULL;
}

/* Membership at the run's roster version and the round 1 signature of
 * one ring member, with its key from our verified chain. */
static bool peer_check(sealroom_ctx *ctx, sr_room *room, const sr_keyrun *run, const run_peer *p,
                       const char *role)
{
    unsigned char pk[SR_KEY_BYTES];
    if (!sr_member_at(room, p->jid, run->roster_version, pk)) {
        run_fail(ctx, room, true, SEALROOM_E_VERIFY,
                 "the ring names %s (our %s), not a member at roster version %" PRIu64, p->jid,
                 role, run->roster_version);
        return false;
    }
    sr_e2e_dmkd_ctx dctx = run_ctx(room, run);
    int erc = sr_e2e_dmkd_round1_verify(p->sig, &dctx, p->jid, p->R, p->c, pk);
    if (erc == SR_E2E_ERR_POINT) {
        run_fail(ctx, room, true, SEALROOM_E_PROTOCOL, "the R of %s (our %s) is not a valid point",
                 p->jid, role);
        return false;
    }
    if (erc != SR_E2E_OK) {
        run_fail(ctx, room, true, SEALROOM_E_VERIFY,
                 "the round 1 of %s (our %s) does not verify with its key", p->jid, role);
        return false;
    }
    return true;
}

static void on_round2(sealroom_ctx *ctx, sr_room *room, xmpp_stanza_t *el)
{
    sr_keyrun *run = room->run;
    round2_in *in = calloc(1, sizeof *in);
    uint64_t epoch = 0;
    if (!in) {
        run_fail(ctx, room, true, SEALROOM_E_NOMEM, "out of memory");
        return;
    }
    bool ok = sr_parse_u64(xmpp_stanza_get_attribute(el, "epoch"), &epoch) &&
              get_b64(el, "sid", in->sid, sizeof in->sid) &&
              sr_parse_u64(xmpp_stanza_get_attribute(el, "n"), &in->n) &&
              sr_parse_u64(xmpp_stanza_get_attribute(el, "position"), &in->position) &&
              parse_peer(el, "left", &in->left) && parse_peer(el, "right", &in->right) &&
              parse_peer(el, "representative", &in->rep);
    if (!ok || epoch != run->epoch) {
        run_fail(ctx, room, true, SEALROOM_E_PROTOCOL, "malformed round 2");
        goto out;
    }
    if (run->phase == RUN_PARKED) {
        run_fail(ctx, room, true, SEALROOM_E_PROTOCOL, "round 2 before we answered round 1");
        goto out;
    }
    if (run->phase >= RUN_ROUND2) {
        if (memcmp(in->sid, run->sid, sizeof in->sid) == 0 && in->n == run->n &&
            in->position == run->position && peer_same(&in->left, &run->left) &&
            peer_same(&in->right, &run->right) && peer_same(&in->rep, &run->rep))
            send_round2(ctx, room, run);
        else
            run_fail(ctx, room, true, SEALROOM_E_PROTOCOL,
                     "round 2 of this run came again with another ring");
        goto out;
    }
    const char *flaw = ring_flaw(ctx, room, run, in);
    if (flaw) {
        run_fail(ctx, room, true, SEALROOM_E_PROTOCOL, "round 2 puts %s", flaw);
        goto out;
    }
    if (!peer_check(ctx, room, run, &in->left, "left neighbour") ||
        !peer_check(ctx, room, run, &in->right, "right neighbour") ||
        (in->position != 1 && !peer_check(ctx, room, run, &in->rep, "representative")))
        goto out;
    int erc = sr_e2e_dmkd_round2(&run->m, run->T, run->second, in->sid, in->left.R, in->right.R,
                                 in->position == 1);
    if (erc == SR_E2E_OK)
        erc = sr_e2e_dmkd_round2_sign(run->sig2, in->sid, ctx->own_bare, run->T, run->second,
                                      ctx->identity->e2e.sign_sk);
    if (erc != SR_E2E_OK) {
        run_fail(ctx, room, true, SEALROOM_E_PROTOCOL, "round 2 could not be computed: %s",
                 sr_e2e_strerror(erc));
        goto out;
    }
    memcpy(run->sid, in->sid, sizeof run->sid);
    run->n = in->n;
    run->position = in->position;
    run->left = in->left;
    run->right = in->right;
    run->rep = in->rep;
    run->phase = RUN_ROUND2;
    send_round2(ctx, room, run);
out:
    free(in);
}

/* ---- round 3 ---- */

/* Digest of round 3 as received, to know a repeat from an equivocation. */
static void round3_digest(unsigned char out[32], xmpp_stanza_t *el)
{
    static const char *const attrs[] = {"epoch", "k-prime", "t-prime-i", "t-prime"};
    static const char *const seal_attrs[] = {"jid", "key", "box-key", "bundle-sig"};
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, 32);
    for (size_t i = 0; i < sizeof attrs / sizeof *attrs; i++) {
        const char *v = xmpp_stanza_get_attribute(el, attrs[i]);
        crypto_generichash_update(&st, (const unsigned char *)(v ? v : ""), (v ? strlen(v) : 0) + 1);
    }
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(el); c; c = xmpp_stanza_get_next(c)) {
        const char *name = xmpp_stanza_is_tag(c) ? xmpp_stanza_get_name(c) : NULL;
        if (!name || strcmp(name, "seal") != 0)
            continue;
        for (size_t i = 0; i < sizeof seal_attrs / sizeof *seal_attrs; i++) {
            const char *v = xmpp_stanza_get_attribute(c, seal_attrs[i]);
            crypto_generichash_update(&st, (const unsigned char *)(v ? v : ""),
                                      (v ? strlen(v) : 0) + 1);
        }
    }
    crypto_generichash_final(&st, out, 32);
}

static bool has_envelope_to(xmpp_stanza_t *confirm, const char *jid)
{
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(confirm); c; c = xmpp_stanza_get_next(c)) {
        const char *to = xmpp_stanza_is_tag(c) ? xmpp_stanza_get_attribute(c, "to") : NULL;
        if (to && strcmp(to, jid) == 0)
            return true;
    }
    return false;
}

/* Seals the run's S_e to (to, box) into confirm: 1 added, 0 refused by
 * crypto_box (skip it), or NOMEM. */
static int add_envelope(sealroom_ctx *ctx, const sr_room *room, const sr_keyrun *run,
                        xmpp_stanza_t *confirm, const char *to, const unsigned char box[32])
{
    unsigned char env[SR_E2E_ENVELOPE_BYTES];
    char b64[256];
    sr_e2e_envelope_ctx ectx = {room->jid, run->epoch, run->roster_hash, ctx->own_bare, to, box};
    if (sr_e2e_envelope_seal(env, &ectx, run->secret, ctx->identity->e2e.sign_sk) != SR_E2E_OK)
        return 0;
    sr_b64_encode(b64, sizeof b64, env, sizeof env);
    xmpp_stanza_t *ee = sr_el(ctx->xmpp, "envelope", NULL);
    xmpp_stanza_t *t = xmpp_stanza_new(ctx->xmpp);
    bool ok = ee && t && xmpp_stanza_set_attribute(ee, "to", to) == XMPP_EOK &&
              xmpp_stanza_set_text(t, b64) == XMPP_EOK &&
              xmpp_stanza_add_child_ex(ee, t, 0) == XMPP_EOK;
    if (ok)
        t = NULL;
    if (ok && xmpp_stanza_add_child_ex(confirm, ee, 0) == XMPP_EOK)
        ee = NULL;
    else
        ok = false;
    if (t)
        xmpp_stanza_release(t);
    if (ee)
        xmpp_stanza_release(ee);
    return ok ? 1 : SEALROOM_E_NOMEM;
}

/* Our slice of the offline members: each <seal/> is checked as a fetched
 * bundle is (a member at the run's roster with the key the chain names,
 * the bundle signature, the pin); one that fails is skipped and logged,
 * so it gets no key from us. Returns OK or NOMEM. */
static int seal_slice(sealroom_ctx *ctx, sr_room *room, const sr_keyrun *run, xmpp_stanza_t *el,
                      xmpp_stanza_t *confirm, size_t *sealed, size_t *skipped)
{
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(el); c; c = xmpp_stanza_get_next(c)) {
        const char *name = xmpp_stanza_is_tag(c) ? xmpp_stanza_get_name(c) : NULL;
        char jid[SR_BARE_JID_MAX];
        unsigned char ed[32], box[32], bsig[SR_E2E_SIG_BYTES], pk[SR_KEY_BYTES];
        if (!name || strcmp(name, "seal") != 0)
            continue;
        if (!sr_jid_normalise_bare(jid, sizeof jid, xmpp_stanza_get_attribute(c, "jid")) ||
            !get_b64(c, "key", ed, sizeof ed) || !get_b64(c, "box-key", box, sizeof box) ||
            !get_b64(c, "bundle-sig", bsig, sizeof bsig)) {
            sr_log(ctx, SEALROOM_LOG_WARN, "%s: malformed <seal/> in round 3 skipped", room->jid);
            (*skipped)++;
            continue;
        }
        if (has_envelope_to(confirm, jid))
            continue; /* ourselves, or named twice */
        if (!sr_member_at(room, jid, run->roster_version, pk) ||
            sodium_memcmp(pk, ed, sizeof pk) != 0 ||
            sr_e2e_bundle_verify(bsig, jid, ed, box) != SR_E2E_OK) {
            sr_log(ctx, SEALROOM_LOG_WARN,
                   "%s: sealing key of %s is not bound to its key in the roster; not sealing to it",
                   room->jid, jid);
            (*skipped)++;
            continue;
        }
        if (sr_pin_check(ctx, jid, ed, box) < 0) {
            sr_log(ctx, SEALROOM_LOG_WARN, "%s: %s has a changed key; not sealing to it",
                   room->jid, jid);
            (*skipped)++;
            continue;
        }
        int rc = add_envelope(ctx, room, run, confirm, jid, box);
        if (rc < 0)
            return rc;
        if (rc == 0) {
            sr_log(ctx, SEALROOM_LOG_WARN, "%s: cannot seal to the key of %s; skipped", room->jid,
                   jid);
            (*skipped)++;
        } else {
            (*sealed)++;
        }
    }
    return SEALROOM_OK;
}

static void on_round3(sealroom_ctx *ctx, sr_room *room, xmpp_stanza_t *el)
{
    sr_keyrun *run = room->run;
    unsigned char kp[32], tpi[32], tp[32], digest[32];
    uint64_t epoch = 0;
    xmpp_stanza_t *confirm = NULL;
    sr_e2e_epoch_keys keys;
    memset(&keys, 0, sizeof keys);
    bool ok = sr_parse_u64(xmpp_stanza_get_attribute(el, "epoch"), &epoch) &&
              get_b64(el, "k-prime", kp, sizeof kp) && get_b64(el, "t-prime-i", tpi, sizeof tpi) &&
              get_b64(el, "t-prime", tp, sizeof tp);
    round3_digest(digest, el);
    if (!ok || epoch != run->epoch) {
        run_fail(ctx, room, true, SEALROOM_E_PROTOCOL, "malformed round 3");
        goto out;
    }
    if (run->phase < RUN_ROUND2) {
        run_fail(ctx, room, true, SEALROOM_E_PROTOCOL, "round 3 before we answered round 2");
        goto out;
    }
    if (run->phase == RUN_CONFIRMED) {
        if (memcmp(digest, run->r3_digest, sizeof digest) != 0) {
            run_fail(ctx, room, true, SEALROOM_E_PROTOCOL,
                     "round 3 of this run came again with other values");
        } else {
            xmpp_stanza_t *again = xmpp_stanza_copy(run->confirm);
            run_send(ctx, room, run->id, again, "confirmation");
        }
        goto out;
    }
    sr_e2e_dmkd_ctx dctx = run_ctx(room, run);
    int erc = sr_e2e_dmkd_derive(run->secret, &run->m, run->sid, &dctx, run->rep.jid, run->rep.c,
                                 kp, tpi, tp);
    /* k, K^l have done their work. */
    sr_e2e_dmkd_member_wipe(&run->m);
    if (erc == SR_E2E_ERR_MISMATCH) {
        run_fail(ctx, room, true, SEALROOM_E_DECRYPT,
                 "the key does not open the commitment of the representative %s: a round was "
                 "altered",
                 run->rep.jid);
        goto out;
    }
    if (erc == SR_E2E_OK)
        erc = sr_e2e_epoch_derive(&keys, run->secret, room->jid, run->epoch, run->roster_hash);
    if (erc == SR_E2E_OK)
        erc = sr_e2e_check_header(run->check, keys.k, room->jid);
    if (erc != SR_E2E_OK) {
        run_fail(ctx, room, true, SEALROOM_E_PROTOCOL, "the agreed key is unusable: %s",
                 sr_e2e_strerror(erc));
        goto out;
    }
    memcpy(run->kc, keys.kc, sizeof run->kc);
    size_t sealed = 0, skipped = 0;
    int rc = SEALROOM_E_NOMEM;
    confirm = run_el(ctx, "confirm", run->id);
    if (confirm && put_b64(confirm, "kc", run->kc, sizeof run->kc) &&
        put_b64(confirm, "check", run->check, sizeof run->check) &&
        (rc = add_envelope(ctx, room, run, confirm, ctx->own_bare,
                           ctx->identity->e2e.box_pk)) == 1)
        rc = seal_slice(ctx, room, run, el, confirm, &sealed, &skipped);
    else if (rc == 0)
        rc = SEALROOM_E_PROTOCOL; /* our own sealing key refused */
    if (rc == SEALROOM_OK && !(run->confirm = xmpp_stanza_copy(confirm)))
        rc = SEALROOM_E_NOMEM;
    if (rc < 0) {
        run_fail(ctx, room, true, rc, "cannot make our confirmation: %s", sealroom_strerror(rc));
        goto out;
    }
    memcpy(run->r3_digest, digest, sizeof digest);
    run->phase = RUN_CONFIRMED;
    sr_log(ctx, SEALROOM_LOG_INFO,
           "%s: key for epoch %" PRIu64 " agreed; sealed to us and %zu offline members (%zu "
           "skipped)",
           room->jid, run->epoch, sealed, skipped);
    run_send(ctx, room, run->id, confirm, "confirmation");
    confirm = NULL;
out:
    if (confirm)
        xmpp_stanza_release(confirm);
    sodium_memzero(&keys, sizeof keys);
}

/* ---- the headlines ---- */

void sr_keyrun_headline(sealroom_ctx *ctx, sr_room *room, xmpp_stanza_t *el)
{
    const char *name = xmpp_stanza_get_name(el);
    unsigned char id[SR_E2E_DMKD_RUN_ID_BYTES];
    char idtext[32];
    if (!ctx->identity || !name)
        return;
    if (!get_b64(el, "run", id, sizeof id)) {
        sr_log(ctx, SEALROOM_LOG_WARN, "%s: <%s/> without a valid run id ignored", room->jid,
               name);
        return;
    }
    run_id_text(idtext, id);
    int round = strcmp(name, "round1") == 0   ? 1
                : strcmp(name, "round2") == 0 ? 2
                : strcmp(name, "round3") == 0 ? 3
                                               : 0;
    if (round && ctx->dmkd_stall && round >= ctx->dmkd_stall) {
        sr_log(ctx, SEALROOM_LOG_DEBUG, "%s: <%s/> ignored (test hook: stalled)", room->jid, name);
        return;
    }
    sr_keyrun *run = run_current(ctx, room);
    bool ours = run && memcmp(run->id, id, sizeof id) == 0;
    if (round == 1) {
        on_round1(ctx, room, el, id);
    } else if (round) {
        if (!run) {
            sr_log(ctx, SEALROOM_LOG_INFO, "%s: <%s/> of run %s, which we are not in; ignored",
                   room->jid, name, idtext);
        } else if (!ours) {
            /* Rounds of the room's runs arrive in order; one of another
             * run in the middle of ours is a replay. */
            run_fail(ctx, room, true, SEALROOM_E_PROTOCOL,
                     "the room sent a %s of another run (%s) during ours", name, idtext);
        } else if (round == 2) {
            on_round2(ctx, room, el);
        } else {
            on_round3(ctx, room, el);
        }
    } else if (strcmp(name, "failed") == 0) {
        if (ours) {
            const char *reason = xmpp_stanza_get_attribute(el, "reason");
            sr_log(ctx, SEALROOM_LOG_INFO,
                   "%s: the room abandoned the key agreement for epoch %" PRIu64 " (%s)",
                   room->jid, run->epoch, reason ? reason : "no reason given");
            run_wipe(room);
        }
    } else {
        sr_log(ctx, SEALROOM_LOG_DEBUG, "%s: <%s/> in the keys namespace ignored", room->jid,
               name);
    }
}

/* ---- the epoch the run made ---- */

void sr_keyrun_epoch_seen(sealroom_ctx *ctx, sr_room *room, uint64_t number)
{
    sr_keyrun *run = run_current(ctx, room);
    if (!run || run->epoch > number || (run->epoch == number && run->phase == RUN_CONFIRMED))
        return;
    sr_log(ctx, SEALROOM_LOG_INFO,
           "%s: epoch %" PRIu64 " came without our run's key; dropping the run", room->jid,
           number);
    run_wipe(room);
}

int sr_keyrun_take(sealroom_ctx *ctx, sr_room *room, uint64_t number, uint64_t rv,
                   const unsigned char hash[32], const unsigned char kc[32],
                   const unsigned char *check, unsigned char secret[32], bool *represented)
{
    sr_keyrun *run = run_current(ctx, room);
    if (!run || run->phase != RUN_CONFIRMED || run->epoch > number)
        return 0;
    if (run->epoch < number) {
        run_wipe(room); /* superseded */
        return 0;
    }
    if (rv != run->roster_version ||
        sodium_memcmp(hash, run->roster_hash, sizeof run->roster_hash) != 0 ||
        sodium_memcmp(kc, run->kc, sizeof run->kc) != 0) {
        /* The room made epoch number from another key than the one we
         * agreed on (it gave members different values): not installed. */
        run_fail(ctx, room, false, SEALROOM_E_VERIFY,
                 "the room's epoch %" PRIu64 " is not the key our run agreed on", number);
        return SEALROOM_E_VERIFY;
    }
    /* A check header other than ours (an epoch from before check headers
     * has none) would have the archive re-keyed along a wrong chain. */
    if (check && sodium_memcmp(check, run->check, sizeof run->check) != 0) {
        run_fail(ctx, room, false, SEALROOM_E_VERIFY,
                 "the room's epoch %" PRIu64 " carries a check header that is not our key's",
                 number);
        return SEALROOM_E_VERIFY;
    }
    memcpy(secret, run->secret, SR_E2E_EPOCH_SECRET_BYTES);
    /* Position 1 is the representative's (ring_flaw held us to it). */
    *represented = run->position == 1;
    sr_log(ctx, SEALROOM_LOG_INFO, "%s: epoch %" PRIu64 " agreed with the members online",
           room->jid, number);
    run_wipe(room);
    return 1;
}
