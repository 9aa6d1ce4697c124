/* "The server is blind" (issue 3 item 4), end to end: a scripted
 * conversation of four libsealroom users (two with a passphrase vault)
 * through a room that goes through every kind of key epoch change (create,
 * add, rekey on request, remove), messages full of distinctive words that
 * are random per run, the history read back by everyone. Every secret every
 * client holds is collected through the test hook after each phase (they
 * are replaced as epochs change), plus the passphrases and the Argon2id
 * master and vault keys recomputed from the stored vault. Then every table
 * of the database is dumped and the sealroomd log read, and neither may
 * hold any secret or word: raw, in any hex run or in any base64 run. The
 * collected secrets are first checked against what the service stores
 * (key confirmation values, wrapped headers, the vault) so the hook cannot
 * hand out stand-ins, and the dump is checked to hold the ciphertexts, so
 * the scan looked at the right data. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "e2e/archive.h"
#include "e2e/common.h"
#include "e2e/epoch.h"
#include "e2e/vault.h"
#include "e2e_common.h"

#define NUSERS 4
#define MAX_MSGS 64
#define MAX_WORDS (MAX_MSGS * 2 + 8)

enum { GRACE, HEIDI, IVAN, DAVE };
static const char *const names[NUSERS] = {"grace", "heidi", "ivan", "dave"};

typedef struct sent {
    int from;
    char origin[72];
    char *stanza_id;
    char text[160];
    uint64_t epoch;
    bool in_room[NUSERS]; /* members when it was sent */
} sent;

static e2e_lib *u[NUSERS];
static bool member[NUSERS], joined[NUSERS];
static char room[256];
static char tag[13];
static sent msgs[MAX_MSGS];
static int nmsgs;
static char *words[MAX_WORDS];
static size_t nwords;
static char passphrase[2][80];
static e2e_secrets secrets;

static const char *const animals[] = {"zebra",  "okapi",   "narwhal", "axolotl", "pangolin",
                                      "quokka", "tapir",   "ibex",    "lemur",   "wombat",
                                      "gecko",  "manatee", "caracal", "dingo"};

static void add_word(const char *w)
{
    IT_CHECK(nwords < MAX_WORDS, "too many words");
    words[nwords] = strdup(w);
    IT_CHECK(words[nwords] != NULL, "out of memory");
    nwords++;
}

static void collect_all(const char *phase)
{
    for (int i = 0; i < NUSERS; i++) {
        size_t n = e2e_secrets_collect(&secrets, e2e_ctx(u[i]), names[i]);
        it_log("%s: %s holds %zu secrets", phase, names[i], n);
        IT_CHECK(n > 0, "%s: the test hook reported no secret at all for %s", phase, names[i]);
    }
}

typedef struct want {
    int who;
    int upto;
} want;

/* Every message sent so far by another member while `who` was joined has
 * arrived live. */
static bool got_live(it_lib *l, const void *arg)
{
    const want *w = arg;
    for (int m = 0; m < w->upto; m++) {
        if (msgs[m].from == w->who || !msgs[m].in_room[w->who]) continue;
        if (!it_lib_live_by_origin(l, room, msgs[m].origin)) return false;
    }
    return true;
}

/* Each current member sends `per` messages, interleaved; then everyone
 * joined receives every one of them live, decrypted to the exact text. */
static void talk(const char *phase, int per)
{
    int start = nmsgs;
    for (int r = 0; r < per; r++)
        for (int i = 0; i < NUSERS; i++) {
            if (!member[i]) continue;
            IT_CHECK(nmsgs < MAX_MSGS, "too many messages");
            sent *s = &msgs[nmsgs];
            s->from = i;
            for (int k = 0; k < NUSERS; k++)
                s->in_room[k] = member[k] && joined[k];
            char w1[64], w2[64];
            snprintf(w1, sizeof w1, "%s-%s-%02d", animals[nmsgs % 14], tag, nmsgs);
            snprintf(w2, sizeof w2, "%s-%s-%02db", animals[(nmsgs + 5) % 14], tag, nmsgs);
            add_word(w1);
            add_word(w2);
            snprintf(s->text, sizeof s->text, "%s: the %s met the %s (%s, message %d)", phase, w1,
                     w2, names[i], nmsgs);
            s->stanza_id = it_lib_say(u[i]->l, room, (const unsigned char *)s->text,
                                      strlen(s->text), s->origin);
            /* Sealing needed the epoch: the sender holds it now. */
            s->epoch = e2e_epoch(u[i], room);
            nmsgs++;
        }
    for (int i = 0; i < NUSERS; i++) {
        if (!member[i] || !joined[i]) continue;
        want w = {i, nmsgs};
        IT_CHECK(it_lib_until(u[i]->l, got_live, &w, IT_TIMEOUT_MS),
                 "%s: %s did not receive every message of this phase live", phase, names[i]);
        for (int m = start; m < nmsgs; m++) {
            if (msgs[m].from == i) continue;
            const it_ev *e = it_lib_live_by_origin(u[i]->l, room, msgs[m].origin);
            IT_CHECK(e->payload_len == strlen(msgs[m].text) &&
                         memcmp(e->payload, msgs[m].text, e->payload_len) == 0,
                     "%s: %s decrypted message %d to other bytes", phase, names[i], m);
            IT_CHECK(e->jid && strcmp(e->jid, u[msgs[m].from]->l->bare) == 0,
                     "%s: %s sees message %d from '%s'", phase, names[i], m,
                     e->jid ? e->jid : "(null)");
        }
        IT_CHECK(e2e_find(u[i], SEALROOM_EVENT_MESSAGE_REJECTED, room, 0) < 0,
                 "%s: %s rejected a message of an honest conversation", phase, names[i]);
    }
    it_log("%s: %d messages sent and received", phase, nmsgs - start);
    collect_all(phase);
}

/* A membership or rekey step must move every member still in the room to
 * exactly one epoch more, the same for all. */
static uint64_t check_epoch_step(const char *what, uint64_t before)
{
    uint64_t e = e2e_epoch(u[GRACE], room);
    IT_CHECK(e == before + 1, "%s: epoch %llu after, %llu before: expected one new epoch", what,
             (unsigned long long)e, (unsigned long long)before);
    it_log("%s: epoch %llu", what, (unsigned long long)e);
    return e;
}

/* Every member's ctx reaches epoch e (they learn it from the <epoch/>
 * notice or when they next need it; sending needs it at once). */
typedef struct want_epoch {
    const char *room;
    uint64_t epoch;
} want_epoch;

static bool at_epoch(it_lib *l, const void *arg)
{
    const want_epoch *w = arg;
    uint64_t e = 0;
    for (int i = 0; i < NUSERS; i++)
        if (u[i]->l == l) return sealroom_room_epoch(e2e_ctx(u[i]), &e, w->room) == 0 &&
                                 e == w->epoch;
    return false;
}

static void join(int i)
{
    it_lib_join(u[i]->l, room, names[i]);
    joined[i] = true;
}

static void add(int i, uint64_t *epoch)
{
    it_lib_add(u[GRACE]->l, room, names[i], SEALROOM_ROLE_MEMBER);
    member[i] = true;
    char what[64];
    snprintf(what, sizeof what, "adding %s", names[i]);
    *epoch = check_epoch_step(what, *epoch);
    collect_all(what);
}

/* The Argon2id master key and the vault key, recomputed from the stored
 * vault header and the passphrase, must be the key the ctx reports; both
 * become needles. */
static void vault_keys(int i, const char *pass)
{
    const char *p[1] = {u[i]->l->bare};
    PGresult *res = e2e_pg_exec("SELECT blob, version FROM vaults WHERE jid = $1", 1, p, true);
    IT_CHECK(PQntuples(res) == 1, "no vault row for %s after account creation", names[i]);
    size_t len = 0;
    unsigned char *blob = e2e_pg_bytea(res, 0, 0, &len);
    PQclear(res);
    IT_CHECK(blob && len > SR_E2E_VAULT_HEADER_BYTES && memcmp(blob, "SRVL", 4) == 0 &&
                 blob[4] == 1,
             "the vault of %s is not a version 1 SRVL blob (%zu bytes)", names[i], len);
    uint32_t ops = sr_e2e_get_u32(blob + 6);
    uint64_t mem = sr_e2e_get_u64(blob + 10);
    IT_CHECK(ops == crypto_pwhash_OPSLIMIT_INTERACTIVE && mem == crypto_pwhash_MEMLIMIT_INTERACTIVE,
             "vault of %s sealed with ops %u mem %llu, not the limits set on its ctx", names[i],
             ops, (unsigned long long)mem);
    unsigned char master[32], key[32];
    IT_CHECK(crypto_pwhash(master, sizeof master, pass, strlen(pass), blob + 18, ops, (size_t)mem,
                           crypto_pwhash_ALG_ARGON2ID13) == 0,
             "Argon2id");
    IT_CHECK(sr_e2e_kdf(key, sizeof key, master, SR_E2E_LABEL_VAULT_KEY, NULL, 0) == SR_E2E_OK,
             "vault key KDF");
    const e2e_secret *hk = e2e_secrets_find(&secrets, names[i], "vault.key", NULL, 0);
    IT_CHECK(hk != NULL, "the test hook reports no vault.key for %s, who created an account",
             names[i]);
    IT_CHECK(hk->len == sizeof key && sodium_memcmp(hk->bytes, key, sizeof key) == 0,
             "the hook's vault.key of %s is not KDF(Argon2id(passphrase, stored salt))", names[i]);
    e2e_secrets_add(&secrets, names[i], "argon2id.master", NULL, 0, master, sizeof master);
    e2e_secrets_add(&secrets, names[i], "vault.key.recomputed", NULL, 0, key, sizeof key);
    sodium_memzero(master, sizeof master);
    sodium_memzero(key, sizeof key);
    free(blob);
}

/* The hook's secrets are the real ones: each epoch secret confirms against
 * the kc the service stored for that epoch, and every stored header of a
 * data key made by one of our users is k_e·P for a (k_e, P) the hook gave. */
static void check_secrets_are_real(uint64_t last_epoch)
{
    long long rid = e2e_room_id(room);
    char rs[24];
    snprintf(rs, sizeof rs, "%lld", rid);
    const char *p[1] = {rs};
    PGresult *res = e2e_pg_exec("SELECT epoch, roster_hash, kc FROM epochs WHERE room_id = $1 "
                                "ORDER BY epoch",
                                1, p, true);
    IT_CHECK((uint64_t)PQntuples(res) == last_epoch, "epochs rows %d, the room reached epoch %llu",
             PQntuples(res), (unsigned long long)last_epoch);
    for (int r = 0; r < PQntuples(res); r++) {
        uint64_t e = (uint64_t)e2e_pg_int8(res, r, 0);
        size_t hl = 0, kl = 0;
        unsigned char *rh = e2e_pg_bytea(res, r, 1, &hl), *kc = e2e_pg_bytea(res, r, 2, &kl);
        IT_CHECK(hl == 32 && kl == 32, "epoch row %llu shapes", (unsigned long long)e);
        bool confirmed = false;
        for (size_t i = 0; i < secrets.n; i++) {
            const e2e_secret *s = &secrets.v[i];
            if (strcmp(s->what, "epoch.secret") != 0 || s->epoch != e || strcmp(s->room, room) != 0)
                continue;
            IT_CHECK(s->len == 32, "epoch.secret of %s is %zu bytes", s->owner, s->len);
            IT_CHECK(sr_e2e_epoch_confirm(kc, s->bytes, room, e, rh) == SR_E2E_OK,
                     "%s's epoch.secret for epoch %llu does not confirm against the stored kc",
                     s->owner, (unsigned long long)e);
            confirmed = true;
        }
        IT_CHECK(confirmed, "no client reported the epoch secret of epoch %llu",
                 (unsigned long long)e);
        free(rh);
        free(kc);
    }
    PQclear(res);

    res = e2e_pg_exec("SELECT sender, epoch, header FROM datakeys WHERE room_id = $1", 1, p, true);
    IT_CHECK(PQntuples(res) > 0, "no data keys stored for %s", room);
    for (int r = 0; r < PQntuples(res); r++) {
        const char *sender = PQgetvalue(res, r, 0);
        uint64_t e = (uint64_t)e2e_pg_int8(res, r, 1);
        size_t hl = 0;
        unsigned char *h = e2e_pg_bytea(res, r, 2, &hl);
        bool found = false;
        for (size_t i = 0; i < secrets.n && !found; i++) {
            const e2e_secret *k = &secrets.v[i];
            if (strcmp(k->what, "epoch.k") != 0 || k->epoch != e || strcmp(k->room, room) != 0)
                continue;
            for (size_t j = 0; j < secrets.n && !found; j++) {
                const e2e_secret *dp = &secrets.v[j];
                if (strcmp(dp->what, "datakey.p") != 0 || dp->len != 32) continue;
                unsigned char w[32];
                found = sr_e2e_header_wrap(w, k->bytes, dp->bytes) == SR_E2E_OK &&
                        memcmp(w, h, 32) == 0;
            }
        }
        IT_CHECK(found, "the stored header of a data key of %s (epoch %llu) is not k_e·P for any "
                        "epoch.k and datakey.p the hook reported",
                 sender, (unsigned long long)e);
        free(h);
    }
    it_log("hook cross-check: %d stored headers and every epoch's kc match the reported secrets",
           PQntuples(res));
    PQclear(res);

    /* The identities are the deterministic ones the test derived. */
    for (int i = 0; i < NUSERS; i++) {
        unsigned char pk[32], sk[64];
        it_user_keys(u[i]->l->bare, pk, sk);
        const e2e_secret *root = e2e_secrets_find(&secrets, names[i], "identity.root", NULL, 0);
        IT_CHECK(root && root->len == 32 && sodium_memcmp(root->bytes, sk, 32) == 0,
                 "the hook's identity.root of %s is not the identity set on its ctx", names[i]);
        sodium_memzero(sk, sizeof sk);
    }
}

static void read_history_all(void)
{
    for (int i = 0; i < NUSERS; i++) {
        e2e_lib_clear(u[i]);
        int rc = e2e_read_history(u[i], room);
        if (!member[i]) {
            IT_CHECK(rc == SEALROOM_E_FORBIDDEN, "removed %s read the history: %d (%s)", names[i],
                     rc, sealroom_strerror(rc));
            continue;
        }
        IT_CHECK(rc == SEALROOM_OK, "%s: history failed: %d (%s)", names[i], rc,
                 sealroom_strerror(rc));
        for (int m = 0; m < nmsgs; m++) {
            const it_ev *e = e2e_history_msg(u[i], room, msgs[m].origin);
            /* Members from the start hold every epoch's key; a later member
             * is sealed only the epochs it belongs to (issue 5 re-keys the
             * older ones). */
            bool must = msgs[m].in_room[i] || msgs[m].from == i;
            if (!e) {
                IT_CHECK(!must, "%s: message %d (epoch %llu) missing from history", names[i], m,
                         (unsigned long long)msgs[m].epoch);
                const it_ev *rj = e2e_rejected(u[i], room, msgs[m].origin);
                IT_CHECK(rj && rj->result == SEALROOM_E_NO_KEY,
                         "%s: message %d from before it joined neither shown nor rejected with "
                         "NO_KEY (%d)",
                         names[i], m, rj ? rj->result : 0);
                continue;
            }
            IT_CHECK(e->payload_len == strlen(msgs[m].text) &&
                         memcmp(e->payload, msgs[m].text, e->payload_len) == 0,
                     "%s: history message %d decrypts to other bytes", names[i], m);
            IT_CHECK(e->stanza_id && strcmp(e->stanza_id, msgs[m].stanza_id) == 0,
                     "%s: history message %d under stanza-id %s, sent as %s", names[i], m,
                     e->stanza_id ? e->stanza_id : "(null)", msgs[m].stanza_id);
        }
    }
    collect_all("history");
}

/* The service's view: every table and the daemon's log. */
static void scan_service(void)
{
    const char **needles = malloc((nwords + 3) * sizeof *needles);
    IT_CHECK(needles != NULL, "out of memory");
    size_t nn = 0;
    for (size_t i = 0; i < nwords; i++)
        needles[nn++] = words[i];
    needles[nn++] = tag;
    needles[nn++] = passphrase[0];
    needles[nn++] = passphrase[1];

    size_t dlen = 0, ntables = 0;
    char *dump = e2e_pg_dump(&dlen, &ntables);
    it_log("dump: %zu tables, %zu bytes; log: %s", ntables, dlen,
           it_env_get()->sealroomd_log ? it_env_get()->sealroomd_log : "(none)");

    /* The dump must hold what the room stored, or the scan proves nothing. */
    IT_CHECK(it_pg_count("messages", room) == nmsgs, "messages rows %ld, sent %d",
             it_pg_count("messages", room), nmsgs);
    static const char *const must_tables[] = {"messages", "datakeys", "epochs", "envelopes",
                                              "vaults", "identities", "roster_versions"};
    for (size_t t = 0; t < sizeof must_tables / sizeof *must_tables; t++) {
        char head[64];
        snprintf(head, sizeof head, "-- table public.%s\n", must_tables[t]);
        IT_CHECK(strstr(dump, head), "the dump has no table %s", must_tables[t]);
    }
    for (int m = 0; m < nmsgs; m++) {
        long long seq = it_pg_seq_of_origin(room, u[msgs[m].from]->l->bare, msgs[m].origin);
        size_t len = 0;
        unsigned char *payload = it_pg_payload(room, seq, &len);
        IT_CHECK(payload && len >= 129 + strlen(msgs[m].text),
                 "stored payload of message %d: %zu bytes for a %zu-byte text", m, len,
                 strlen(msgs[m].text));
        char *hex = e2e_hex(payload, len);
        IT_CHECK(strstr(dump, hex), "the dump does not hold the ciphertext of message %d", m);
        free(hex);
        free(payload);
    }
    for (int i = GRACE; i <= HEIDI; i++)
        IT_CHECK(e2e_pg_vault_rows(u[i]->l->bare) == 1, "no vault row for %s", names[i]);

    char why[768];
    IT_CHECK(!e2e_scan((const unsigned char *)dump, dlen, &secrets, needles, nn, "database dump",
                       why, sizeof why),
             "the service holds a secret or plaintext: %s", why);
    free(dump);

    const char *logpath = it_env_get()->sealroomd_log;
    IT_CHECK(logpath && *logpath, "SEALROOM_TEST_SEALROOMD_LOG is not set: cannot read the log");
    size_t llen = 0;
    char *log = e2e_read_file(logpath, &llen);
    IT_CHECK(log != NULL, "cannot read the sealroomd log %s", logpath);
    IT_CHECK(llen > 0, "the sealroomd log %s is empty", logpath);
    IT_CHECK(!e2e_scan((const unsigned char *)log, llen, &secrets, needles, nn, "sealroomd log",
                       why, sizeof why),
             "the sealroomd log holds a secret or plaintext: %s", why);
    free(log);
    it_log("scanned %zu secrets, %zu words, 2 passphrases: none in %zu tables or the log",
           secrets.n, nwords + 1, ntables);
    free(needles);
}

int main(void)
{
    it_init("it_e2e_blind");
    e2e_scan_selfcheck();
    it_random_hex(tag, 6);
    for (int k = 0; k < 2; k++) {
        char h[17];
        it_random_hex(h, 8);
        snprintf(passphrase[k], sizeof passphrase[k], "correct horse %s battery %s", h,
                 names[k]);
    }

    for (int i = 0; i < NUSERS; i++) {
        char bare[256];
        it_bare(bare, sizeof bare, names[i]);
        if (i <= HEIDI) e2e_pg_delete_vault(bare);
        u[i] = e2e_connect(names[i], true);
    }
    for (int i = GRACE; i <= HEIDI; i++) {
        int rc = e2e_account_create(u[i], passphrase[i]);
        IT_CHECK(rc == SEALROOM_OK, "account creation for %s: %d (%s)", names[i], rc,
                 sealroom_strerror(rc));
        IT_CHECK(e2e_pg_vault_rows(u[i]->l->bare) == 1, "no vault stored for %s", names[i]);
    }
    for (int i = IVAN; i <= DAVE; i++)
        it_lib_register(u[i]->l);
    collect_all("accounts");
    for (int i = GRACE; i <= HEIDI; i++)
        vault_keys(i, passphrase[i]);

    it_new_room(room, sizeof room, "e2eblind");
    it_log("room %s, words tagged %s", room, tag);
    it_lib_create(u[GRACE]->l, room);
    member[GRACE] = true;
    uint64_t epoch = e2e_epoch(u[GRACE], room);
    IT_CHECK(epoch == 1, "a new room starts at epoch %llu, expected 1", (unsigned long long)epoch);
    collect_all("room created");
    add(HEIDI, &epoch);
    add(IVAN, &epoch);
    join(GRACE);
    join(HEIDI);
    join(IVAN);
    talk("three members", 3);

    add(DAVE, &epoch);
    join(DAVE);
    talk("dave added", 2);

    uint32_t req = 0;
    IT_OK(sealroom_room_rekey(e2e_ctx(u[HEIDI]), &req, room));
    it_lib_wait_ok(u[HEIDI]->l, req, "rekey on request");
    const it_ev *d = it_lib_done(u[HEIDI]->l, req);
    long di = d ? (long)(d - u[HEIDI]->l->ev) : -1;
    IT_CHECK(di >= 0 && e2e_ext_of(u[HEIDI], (size_t)di)->epoch == epoch + 1,
             "the rekey completion carries epoch %llu, expected %llu",
             di >= 0 ? (unsigned long long)e2e_ext_of(u[HEIDI], (size_t)di)->epoch : 0ull,
             (unsigned long long)(epoch + 1));
    epoch++;
    want_epoch we = {room, epoch};
    IT_CHECK(it_lib_until(u[GRACE]->l, at_epoch, &we, IT_TIMEOUT_MS),
             "grace did not move to heidi's new epoch %llu", (unsigned long long)epoch);
    IT_CHECK(e2e_find(u[GRACE], SEALROOM_EVENT_EPOCH_CHANGED, room, 0) >= 0,
             "grace got no EPOCH_CHANGED event for heidi's rekey");
    collect_all("rekey");
    talk("after rekey", 2);

    uint32_t rreq = 0;
    IT_OK(sealroom_room_remove_member(e2e_ctx(u[GRACE]), &rreq, room, u[IVAN]->l->bare));
    it_lib_wait_ok(u[GRACE]->l, rreq, "removing ivan");
    member[IVAN] = false;
    joined[IVAN] = false;
    epoch = check_epoch_step("removing ivan", epoch);
    collect_all("ivan removed");
    talk("ivan removed", 2);
    uint64_t ivan_epoch = 0;
    if (sealroom_room_epoch(e2e_ctx(u[IVAN]), &ivan_epoch, room) == SEALROOM_OK)
        IT_CHECK(ivan_epoch < epoch, "removed ivan holds the epoch made to exclude him (%llu)",
                 (unsigned long long)ivan_epoch);

    read_history_all();
    check_secrets_are_real(epoch);
    for (int i = 0; i < NUSERS; i++) {
        static const char *const kinds[] = {"identity.root", "identity.sign_sk", "identity.box_sk"};
        for (size_t k = 0; k < 3; k++)
            IT_CHECK(e2e_secrets_count(&secrets, names[i], kinds[k], NULL) >= 1,
                     "the hook reported no %s for %s", kinds[k], names[i]);
        IT_CHECK(e2e_secrets_count(&secrets, names[i], "epoch.secret", room) >= 1 &&
                     e2e_secrets_count(&secrets, names[i], "datakey.p", NULL) >= 1,
                 "the hook reported no epoch secret or data key of %s for %s", room, names[i]);
    }
    it_log("%zu distinct secrets collected over all phases", secrets.n);
    scan_service();

    for (int m = 0; m < nmsgs; m++)
        free(msgs[m].stanza_id);
    for (size_t i = 0; i < nwords; i++)
        free(words[i]);
    for (int i = 0; i < NUSERS; i++)
        e2e_lib_free(u[i]);
    e2e_secrets_free(&secrets);
    sodium_memzero(passphrase, sizeof passphrase);
    it_log("passed");
    return 0;
}
