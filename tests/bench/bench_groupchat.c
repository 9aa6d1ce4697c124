/* Groupchat throughput benchmark: messages per second end to end through the
 * XMPP server with N occupants, Sealroom (sealroomd behind the server) side by
 * side with the server's own MUC with MAM (the plaintext baseline), in the
 * same run, interleaved A B A B, medians of several repetitions. The same
 * client code drives both sides (one thread, one libstrophe context over all
 * connections), so only the server side differs. Output follows
 * shared/BENCH.md: machine, versions and parameters first, then RESULT lines
 * and a VERDICT line. tests/bench/run-groupchat.sh brings up a private stack
 * and runs it; smoke-groupchat.sh is the ctest smoke run.
 *
 * Sealroom's figures depend on whether the XMPP server fans reflections out
 * (sealroomd's xmpp.fanout_jid): the mode is reported, and with
 * --fanout-switch the run adds a third side, Sealroom without fan-out,
 * interleaved with the other two (A B C A B C), as supplementary figures.
 *
 * Exit status: 0 when every run completed and every message arrived intact
 * and in order at every occupant (whether or not the targets were met), 1 on
 * any failure, 2 on bad usage. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <sealroom/sealroom.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strophe.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef BENCH_STROPHE_VERSION
#define BENCH_STROPHE_VERSION "unknown"
#endif

#define NS_MUC "http://jabber.org/protocol/muc"
#define NS_MUC_USER "http://jabber.org/protocol/muc#user"
#define NS_SID "urn:xmpp:sid:0"
#define NS_SEALROOM "urn:xmpp:sealroom:0"
#define NS_DELAY "urn:xmpp:delay"

/* What a Sealroom client puts in <body/> for clients without Sealroom. */
#define FALLBACK_BODY "[This message is encrypted with Sealroom; your client cannot display it.]"
#define SEALED_OPEN "<sealed xmlns='" NS_SEALROOM "'>"
#define SEALED_CLOSE "</sealed>"
#define PAYLOAD_BYTES 200
#define PAYLOAD_B64_MAX 512
#define MAX_CLIENTS 512
#define MAX_PLAN 8
#define MAX_WINDOW 256

enum side { SIDE_SEALROOM = 0, SIDE_MUC = 1 };

/* What each timed run measures: the product as configured (targets), the
 * baseline, and optionally Sealroom with fan-out switched off. */
enum variant { VAR_SEALROOM = 0, VAR_MUC = 1, VAR_NOFANOUT = 2, NVARIANT = 3 };

typedef struct plan_entry {
    unsigned n;      /* occupants */
    unsigned s;      /* senders (occupants 0..s-1) */
    unsigned total;  /* messages per run (rounded down to a multiple of s) */
    unsigned window; /* unacknowledged messages per sender */
} plan_entry;

typedef struct options {
    const char *host, *domain, *service, *muc_service, *password, *pg, *server;
    const char *user_prefix, *xmpp_version;
    const char *fanout;        /* "on", "off" or "unknown": sealroomd's mode, for the report */
    const char *fanout_switch; /* command run with "on" or "off" to switch it, or NULL */
    int only;                  /* -1, or the one variant to run (for profiling) */
    unsigned port, reps;
    int pid_sealroomd, pid_xmpp, pid_pg;
    plan_entry plan[MAX_PLAN];
    unsigned nplan;
    unsigned run_timeout_s;
} options;

struct bench;

typedef struct client {
    struct bench *b;
    xmpp_conn_t *conn;
    unsigned idx;
    char bare[128], full[160], nick[16];
    int conn_state; /* 0 connecting, 1 up, -1 failed or dropped */
    /* Per room. */
    bool joined, left;
    unsigned iq_pending;
    unsigned presences;
    unsigned long rcvd;
    unsigned *next_seq; /* next sequence number expected from each sender */
    /* As a sender. */
    unsigned sent, acked;
    char (*inflight)[PAYLOAD_B64_MAX]; /* payload text by seq % window */
    /* The data key this sender's payloads name (see send_message). */
    unsigned char dkid[16];
    bool dk_sent;
} client;

typedef struct sample {
    double wall_s;
    double cpu_s[4]; /* sealroomd, xmpp server, postgres, this client */
    long long xids;  /* write transactions committed meanwhile */
    long long wal_bytes;
    bool pg_ok;
} sample;

typedef struct bench {
    options o;
    xmpp_ctx_t *ctx;
    client cl[MAX_CLIENTS];
    unsigned ncl;
    PGconn *pg;
    long clk_tck;
    /* Current room and run. */
    enum side side;
    char room[256];
    size_t room_len;
    unsigned gen;
    const plan_entry *pe;
    unsigned per_sender;
    unsigned long long deliveries, want;
    unsigned errors;
    char first_error[512];
    char tag[16];
    const char *fanout_now; /* the mode last switched to, with --fanout-switch */
    uint64_t epoch, roster_version; /* of the Sealroom room, after set-up */
} bench;

static const char *side_name(const bench *b, enum side s)
{
    static char buf[64];
    if (s == SIDE_SEALROOM) return "sealroom";
    snprintf(buf, sizeof buf, "%s-muc", b->o.server);
    return buf;
}

static const char *variant_name(const bench *b, enum variant v)
{
    return v == VAR_NOFANOUT ? "sealroom-nofanout" : side_name(b, (enum side)v);
}

static void note_error(bench *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note_error(bench *b, const char *fmt, ...)
{
    va_list ap;
    if (b->errors++ == 0) {
        va_start(ap, fmt);
        vsnprintf(b->first_error, sizeof b->first_error, fmt, ap);
        va_end(ap);
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- CPU accounting from /proc ---- */

/* utime+stime (ticks) of every process, and its parent, from /proc/PID/stat. */
typedef struct proc_row {
    int pid, ppid;
    unsigned long long ticks;
} proc_row;

static size_t read_procs(proc_row **out)
{
    DIR *d = opendir("/proc");
    size_t n = 0, cap = 0;
    proc_row *rows = NULL;
    struct dirent *de;
    if (!d) return 0;
    while ((de = readdir(d))) {
        char path[64], buf[1024];
        int pid = atoi(de->d_name);
        FILE *f;
        size_t len;
        if (pid <= 0) continue;
        snprintf(path, sizeof path, "/proc/%d/stat", pid);
        if (!(f = fopen(path, "r"))) continue;
        len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = '\0';
        /* The command name may hold spaces and parentheses: fields resume
         * after the last ')'. Then: state ppid ... utime(14) stime(15). */
        char *p = strrchr(buf, ')');
        if (!p) continue;
        char state;
        int ppid;
        unsigned long long ut, stt;
        if (sscanf(p + 1, " %c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &state, &ppid,
                   &ut, &stt) != 4)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            proc_row *nr = realloc(rows, cap * sizeof *rows);
            if (!nr) break;
            rows = nr;
        }
        rows[n++] = (proc_row){pid, ppid, ut + stt};
    }
    closedir(d);
    *out = rows;
    return n;
}

/* CPU ticks of pid and all its descendants (PostgreSQL's backends are
 * children of the postmaster; a wrapper's daemon is its child). */
static unsigned long long tree_ticks(const proc_row *rows, size_t n, int pid)
{
    unsigned long long sum = 0;
    if (pid <= 0) return 0;
    for (size_t i = 0; i < n; i++) {
        if (rows[i].pid == pid)
            sum += rows[i].ticks;
        else if (rows[i].ppid == pid)
            sum += tree_ticks(rows, n, rows[i].pid);
    }
    return sum;
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void take_cpu(bench *b, double cpu[4])
{
    proc_row *rows = NULL;
    size_t n = read_procs(&rows);
    cpu[0] = (double)tree_ticks(rows, n, b->o.pid_sealroomd) / (double)b->clk_tck;
    cpu[1] = (double)tree_ticks(rows, n, b->o.pid_xmpp) / (double)b->clk_tck;
    cpu[2] = (double)tree_ticks(rows, n, b->o.pid_pg) / (double)b->clk_tck;
    cpu[3] = self_cpu_s();
    free(rows);
}

/* ---- PostgreSQL counters ---- */

/* The transaction id counter advances once per transaction that wrote
 * something (our own probe takes one); WAL position gives bytes written.
 * Both are exact at once, unlike pg_stat_database, which backends flush
 * only every few seconds when idle. */
static bool pg_counters(bench *b, long long *xid, long long *wal)
{
    if (!b->pg) return false;
    PGresult *r = PQexec(b->pg, "SELECT pg_current_xact_id()::text::bigint, "
                                "(pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint");
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    if (ok) {
        *xid = atoll(PQgetvalue(r, 0, 0));
        *wal = atoll(PQgetvalue(r, 0, 1));
    }
    PQclear(r);
    return ok;
}

static void pg_show(bench *b, const char *what, char *out, size_t outlen)
{
    snprintf(out, outlen, "unknown");
    if (!b->pg) return;
    char sql[128];
    snprintf(sql, sizeof sql, "SHOW %s", what);
    PGresult *r = PQexec(b->pg, sql);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        snprintf(out, outlen, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
}

/* ---- the XMPP clients ---- */

typedef bool (*pred_fn)(bench *b);

/* Drive every connection until pred holds; false on timeout or when a
 * connection drops. */
static bool run_until(bench *b, pred_fn pred, double timeout_s)
{
    double deadline = now_s() + timeout_s;
    while (!pred(b)) {
        for (unsigned i = 0; i < b->ncl; i++)
            if (b->cl[i].conn_state < 0) return false;
        if (now_s() > deadline || b->errors) return false;
        xmpp_run_once(b->ctx, 1);
    }
    return true;
}

static void run_for(bench *b, double secs)
{
    double end = now_s() + secs;
    while (now_s() < end)
        xmpp_run_once(b->ctx, 1);
}

static bool in_room(const bench *b, const char *from)
{
    return from && strncmp(from, b->room, b->room_len) == 0 && from[b->room_len] == '/';
}

static bool has_status(xmpp_stanza_t *x, const char *code)
{
    for (xmpp_stanza_t *c = x ? xmpp_stanza_get_children(x) : NULL; c;
         c = xmpp_stanza_get_next(c)) {
        const char *n = xmpp_stanza_get_name(c);
        const char *v = xmpp_stanza_get_attribute(c, "code");
        if (n && strcmp(n, "status") == 0 && v && strcmp(v, code) == 0) return true;
    }
    return false;
}

static const char *error_condition(xmpp_stanza_t *st)
{
    xmpp_stanza_t *e = xmpp_stanza_get_child_by_name(st, "error");
    xmpp_stanza_t *c = e ? xmpp_stanza_get_children(e) : NULL;
    for (; c; c = xmpp_stanza_get_next(c))
        if (xmpp_stanza_is_tag(c)) return xmpp_stanza_get_name(c);
    return "unknown";
}

static void send_message(client *c);

static void pump(client *c)
{
    bench *b = c->b;
    while (c->sent < b->per_sender && c->sent - c->acked < b->pe->window)
        send_message(c);
}

/* Payload text of the message: 200 random bytes in base64 inside <sealed/>
 * for Sealroom, plain text of the same stanza length in <body/> for MUC. */
static void send_message(client *c)
{
    bench *b = c->b;
    unsigned seq = c->sent++;
    char *text = c->inflight[seq % b->pe->window];
    char oid[48], xml[2048];
    int len;
    snprintf(oid, sizeof oid, "b%u-%u-%u", b->gen, c->idx, seq);
    if (b->side == SIDE_SEALROOM) {
        /* The room takes only payloads in the e2e wire format naming a data
         * key of the sender in the current epoch. The benchmark measures
         * the service, not client crypto, so each sender publishes a data
         * key with a random header (the room checks it is a valid point)
         * before its first message, and frames random bytes with it:
         * 01 ‖ data-key id ‖ roster version ‖ the rest. The room handles
         * the key before the messages behind it on the same stream. */
        unsigned char raw[PAYLOAD_BYTES];
        randombytes_buf(raw, sizeof raw);
        if (!c->dk_sent) {
            unsigned char h[32];
            char idb[32], hb[64], dk[512];
            randombytes_buf(c->dkid, sizeof c->dkid);
            crypto_core_ristretto255_random(h);
            sodium_bin2base64(idb, sizeof idb, c->dkid, sizeof c->dkid,
                              sodium_base64_VARIANT_ORIGINAL);
            sodium_bin2base64(hb, sizeof hb, h, sizeof h, sodium_base64_VARIANT_ORIGINAL);
            int dl = snprintf(dk, sizeof dk,
                              "<iq type='set' to='%s' id='dk%u-%u'><datakey xmlns='" NS_SEALROOM
                              "' id='%s' epoch='%llu'>%s</datakey></iq>",
                              b->room, b->gen, c->idx, idb, (unsigned long long)b->epoch, hb);
            xmpp_send_raw(c->conn, dk, (size_t)dl);
            c->dk_sent = true;
        }
        raw[0] = 1;
        memcpy(raw + 1, c->dkid, sizeof c->dkid);
        for (int k = 0; k < 8; k++)
            raw[17 + k] = (unsigned char)(b->roster_version >> (56 - 8 * k));
        sodium_bin2base64(text, PAYLOAD_B64_MAX, raw, sizeof raw, sodium_base64_VARIANT_ORIGINAL);
        len = snprintf(xml, sizeof xml,
                       "<message type='groupchat' to='%s' id='%s'><body>" FALLBACK_BODY
                       "</body>" SEALED_OPEN "%s" SEALED_CLOSE "<origin-id xmlns='" NS_SID
                       "' id='%s'/></message>",
                       b->room, oid, text, oid);
    } else {
        /* Same bytes on the wire: the body carries as many characters as
         * the fallback, the <sealed/> element and its payload together. */
        size_t plain =
            sizeof FALLBACK_BODY - 1 + sizeof "</body>" - 1 + sizeof SEALED_OPEN - 1 +
            (sodium_base64_ENCODED_LEN(PAYLOAD_BYTES, sodium_base64_VARIANT_ORIGINAL) - 1) +
            sizeof SEALED_CLOSE - 1 - (sizeof "</body>" - 1);
        unsigned char raw[(PAYLOAD_B64_MAX / 4) * 3 - 3];
        size_t nraw = (plain / 4 + 1) * 3;
        if (nraw > sizeof raw) nraw = sizeof raw;
        randombytes_buf(raw, nraw);
        sodium_bin2base64(text, PAYLOAD_B64_MAX, raw, nraw, sodium_base64_VARIANT_ORIGINAL);
        if (plain < PAYLOAD_B64_MAX) text[plain] = '\0';
        len = snprintf(xml, sizeof xml,
                       "<message type='groupchat' to='%s' id='%s'><body>%s</body>"
                       "<origin-id xmlns='" NS_SID "' id='%s'/></message>",
                       b->room, oid, text, oid);
    }
    if (len < 0 || (size_t)len >= sizeof xml) {
        note_error(b, "message too long for the buffer");
        return;
    }
    xmpp_send_raw(c->conn, xml, (size_t)len);
}

/* A sender's own reflected message is its acknowledgement; its payload
 * must come back unchanged. */
static void check_own(client *c, xmpp_stanza_t *st, unsigned seq)
{
    bench *b = c->b;
    xmpp_stanza_t *el = b->side == SIDE_SEALROOM
                            ? xmpp_stanza_get_child_by_name_and_ns(st, "sealed", NS_SEALROOM)
                            : xmpp_stanza_get_child_by_name(st, "body");
    char *t = el ? xmpp_stanza_get_text(el) : NULL;
    if (!t || strcmp(t, c->inflight[seq % b->pe->window]) != 0)
        note_error(b, "%s: reflected payload of message %u differs from what was sent", c->bare,
                   seq);
    if (t) xmpp_free(b->ctx, t);
}

static int on_message(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
    client *c = ud;
    bench *b = c->b;
    const char *type = xmpp_stanza_get_type(st);
    const char *from = xmpp_stanza_get_from(st);
    (void)conn;
    if (type && strcmp(type, "error") == 0) {
        note_error(b, "%s: message error from %s: %s", c->bare, from ? from : "?",
                   error_condition(st));
        return 1;
    }
    if (!type || strcmp(type, "groupchat") != 0 || !in_room(b, from)) return 1;
    if (xmpp_stanza_get_child_by_name_and_ns(st, "delay", NS_DELAY)) return 1; /* history */
    xmpp_stanza_t *oid = xmpp_stanza_get_child_by_name_and_ns(st, "origin-id", NS_SID);
    const char *id = oid ? xmpp_stanza_get_attribute(oid, "id") : NULL;
    unsigned gen, snd, seq;
    if (!id || sscanf(id, "b%u-%u-%u", &gen, &snd, &seq) != 3 || gen != b->gen) return 1;
    if (snd >= b->pe->s) {
        note_error(b, "%s: message from unknown sender %u", c->bare, snd);
        return 1;
    }
    if (seq != c->next_seq[snd]) {
        note_error(b,
                   "%s: from sender %u got message %u, expected %u (lost, duplicated or "
                   "reordered)",
                   c->bare, snd, seq, c->next_seq[snd]);
        if (seq < c->next_seq[snd]) return 1;
    }
    c->next_seq[snd] = seq + 1;
    c->rcvd++;
    b->deliveries++;
    if (snd == c->idx) {
        check_own(c, st, seq);
        c->acked++;
        pump(c);
    }
    return 1;
}

static int on_presence(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
    client *c = ud;
    bench *b = c->b;
    const char *from = xmpp_stanza_get_from(st);
    const char *type = xmpp_stanza_get_type(st);
    (void)conn;
    if (!in_room(b, from)) return 1;
    if (type && strcmp(type, "error") == 0) {
        note_error(b, "%s: presence error from %s: %s", c->bare, from, error_condition(st));
        c->left = true;
        return 1;
    }
    xmpp_stanza_t *x = xmpp_stanza_get_child_by_name_and_ns(st, "x", NS_MUC_USER);
    bool self = has_status(x, "110") || strcmp(from + b->room_len + 1, c->nick) == 0;
    if (type && strcmp(type, "unavailable") == 0) {
        if (self) c->left = true;
        return 1;
    }
    c->presences++;
    if (self) c->joined = true;
    return 1;
}

/* Counts the owner's configuration requests still unanswered. */
static int on_iq_result(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
    client *c = ud;
    const char *type = xmpp_stanza_get_type(st);
    (void)conn;
    c->iq_pending--;
    if (!type || strcmp(type, "result") != 0)
        note_error(c->b, "%s: room configuration refused: %s", c->bare, error_condition(st));
    return 0;
}

static void on_conn(xmpp_conn_t *conn, xmpp_conn_event_t ev, int err, xmpp_stream_error_t *se,
                    void *ud)
{
    client *c = ud;
    (void)se;
    if (ev == XMPP_CONN_CONNECT) {
        c->conn_state = 1;
        /* Negative priority: available, but never chosen for bare-JID mail. */
        xmpp_send_raw_string(conn, "<presence><priority>-1</priority></presence>");
    } else {
        if (c->conn_state >= 0)
            note_error(c->b, "%s: connection %s (error %d)", c->bare,
                       c->conn_state ? "dropped" : "failed", err);
        c->conn_state = -1;
    }
}

static bool all_connected(bench *b)
{
    for (unsigned i = 0; i < b->ncl; i++)
        if (b->cl[i].conn_state != 1) return false;
    return true;
}

static void name_clients(bench *b, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        client *c = &b->cl[i];
        c->b = b;
        c->idx = i;
        snprintf(c->bare, sizeof c->bare, "%s%03u@%s", b->o.user_prefix, i + 1, b->o.domain);
        snprintf(c->full, sizeof c->full, "%s%03u@%s/bench-%ld-%u", b->o.user_prefix, i + 1,
                 b->o.domain, (long)getpid(), i);
        snprintf(c->nick, sizeof c->nick, "u%03u", i + 1);
    }
}

static bool connect_all(bench *b, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        client *c = &b->cl[i];
        c->conn = xmpp_conn_new(b->ctx);
        c->next_seq = calloc(MAX_CLIENTS, sizeof *c->next_seq);
        c->inflight = calloc(MAX_WINDOW, sizeof *c->inflight);
        if (!c->conn || !c->next_seq || !c->inflight) return false;
        xmpp_conn_set_jid(c->conn, c->full);
        xmpp_conn_set_pass(c->conn, b->o.password);
        xmpp_conn_set_flags(c->conn, XMPP_CONN_FLAG_DISABLE_TLS);
        xmpp_handler_add(c->conn, on_message, NULL, "message", NULL, c);
        xmpp_handler_add(c->conn, on_presence, NULL, "presence", NULL, c);
        b->ncl = i + 1;
        if (xmpp_connect_client(c->conn, b->o.host, (unsigned short)b->o.port, on_conn, c) !=
            XMPP_EOK) {
            note_error(b, "%s: cannot start connecting", c->bare);
            return false;
        }
    }
    return run_until(b, all_connected, 60);
}

/* ---- rooms ---- */

static unsigned want_n;
static bool all_joined(bench *b)
{
    for (unsigned i = 0; i < want_n; i++)
        if (!b->cl[i].joined || b->cl[i].presences < want_n) return false;
    return true;
}
static bool all_left(bench *b)
{
    for (unsigned i = 0; i < want_n; i++)
        if (!b->cl[i].left) return false;
    return true;
}
static bool first_joined(bench *b)
{
    return b->cl[0].joined || b->cl[0].left;
}
static bool first_iq_done(bench *b)
{
    return b->cl[0].iq_pending == 0;
}
static bool run_done(bench *b)
{
    return b->deliveries >= b->want || b->errors > 0;
}

static void set_room(bench *b, enum side side, const char *room)
{
    b->side = side;
    snprintf(b->room, sizeof b->room, "%s", room);
    b->room_len = strlen(b->room);
    for (unsigned i = 0; i < b->ncl; i++) {
        client *c = &b->cl[i];
        c->joined = c->left = false;
        c->iq_pending = 0;
        c->presences = 0;
    }
}

static void send_join(client *c)
{
    xmpp_send_raw_string(c->conn,
                         "<presence to='%s/%s'><x xmlns='" NS_MUC
                         "'><history maxstanzas='0'/></x></presence>",
                         c->b->room, c->nick);
}

static void muc_iq_send(bench *b, const char *id, const char *xml)
{
    client *o = &b->cl[0];
    o->iq_pending++;
    xmpp_id_handler_add(o->conn, on_iq_result, id, o);
    xmpp_send_raw_string(o->conn, "%s", xml);
}

/* The baseline room as an admin would set up the equivalent of a Sealroom
 * room: persistent, members-only, real JIDs visible, archived (the server
 * config archives every MUC room). The first joiner creates and owns it. */
static bool muc_setup(bench *b, unsigned n)
{
    client *o = &b->cl[0];
    char *xml = malloc(256 + (size_t)n * 160);
    bool ok;
    if (!xml) return false;
    send_join(o);
    if (!run_until(b, first_joined, 30) || !o->joined) {
        note_error(b, "%s: could not create MUC room %s", o->bare, b->room);
        free(xml);
        return false;
    }
    snprintf(xml, 256 + (size_t)n * 160,
             "<iq type='set' to='%s' id='cfg-%u'><query xmlns='" NS_MUC
             "#owner'><x xmlns='jabber:x:data' type='submit'>"
             "<field var='FORM_TYPE'><value>" NS_MUC "#roomconfig</value></field>"
             "<field var='muc#roomconfig_persistentroom'><value>1</value></field>"
             "<field var='muc#roomconfig_membersonly'><value>1</value></field>"
             "<field var='muc#roomconfig_whois'><value>anyone</value></field>"
             "</x></query></iq>",
             b->room, b->gen);
    char id[32];
    snprintf(id, sizeof id, "cfg-%u", b->gen);
    muc_iq_send(b, id, xml);
    ok = run_until(b, first_iq_done, 30);
    /* Prosody applies only the first <item/> of an admin request: one
     * request per member, pipelined. */
    for (unsigned i = 1; ok && i < n; i++) {
        snprintf(id, sizeof id, "aff-%u-%u", b->gen, i);
        snprintf(xml, 256 + (size_t)n * 160,
                 "<iq type='set' to='%s' id='%s'><query xmlns='" NS_MUC
                 "#admin'><item affiliation='member' jid='%s'/></query></iq>",
                 b->room, id, b->cl[i].bare);
        muc_iq_send(b, id, xml);
    }
    ok = ok && run_until(b, first_iq_done, 30);
    free(xml);
    return ok;
}

/* Sealroom side: identities are registered once; each room is created by
 * the owner's blocking libsealroom client and the occupants added one
 * signed roster version at a time. */
typedef struct sr_setup {
    sealroom_client *owner;
    unsigned owner_idx;
    unsigned char pk[MAX_CLIENTS][SEALROOM_PUBLICKEYBYTES];
    bool have_pk[MAX_CLIENTS];
} sr_setup;

/* Benchmark identities are throwaway and derived from the JID, so a rerun
 * against the same database presents the same key (a second, different key
 * for a JID is refused by the service). */
static int bench_identity(sealroom_identity **out, const char *bare)
{
    unsigned char seed[SEALROOM_SECRETKEYBYTES];
    static const char label[] = "sealroom-bench-identity-v0:";
    crypto_generichash_state h;
    crypto_generichash_init(&h, NULL, 0, sizeof seed);
    crypto_generichash_update(&h, (const unsigned char *)label, sizeof label - 1);
    crypto_generichash_update(&h, (const unsigned char *)bare, strlen(bare));
    crypto_generichash_final(&h, seed, sizeof seed);
    int rc = sealroom_identity_import(out, seed, sizeof seed);
    sodium_memzero(seed, sizeof seed);
    sodium_memzero(&h, sizeof h);
    return rc;
}

static int sr_connect(bench *b, sealroom_client **out, unsigned i)
{
    char jid[200];
    snprintf(jid, sizeof jid, "%s/bench-setup-%ld", b->cl[i].bare, (long)getpid());
    return sealroom_client_connect(out, jid, b->o.password, b->o.host, (unsigned short)b->o.port,
                                   b->o.service, 30000);
}

/* rid is read only after the request call (an argument) has filled it in. */
static bool sr_wait(bench *b, sealroom_client *c, int rc, const uint32_t *rid, const char *what,
                    const char *who)
{
    if (rc == SEALROOM_OK) rc = sealroom_client_wait(c, *rid, 30000);
    if (rc != SEALROOM_OK) {
        note_error(b, "%s (%s): %s: %s", what, who, sealroom_strerror(rc),
                   sealroom_ctx_last_error(sealroom_client_ctx(c)));
        return false;
    }
    return true;
}

static bool sr_register_all(bench *b, sr_setup *s, unsigned n)
{
    bool have_owner = false;
    for (unsigned i = 0; i < n; i++) {
        sealroom_client *c = NULL;
        sealroom_identity *id = NULL;
        uint32_t rid = 0;
        int rc = sr_connect(b, &c, i);
        if (rc != SEALROOM_OK) {
            note_error(b, "%s: libsealroom connect: %s", b->cl[i].bare, sealroom_strerror(rc));
            return false;
        }
        rc = bench_identity(&id, b->cl[i].bare);
        if (rc == SEALROOM_OK) rc = sealroom_client_set_identity(c, id);
        if (rc == SEALROOM_OK) rc = sealroom_identity_register(sealroom_client_ctx(c), &rid);
        if (rc == SEALROOM_OK) rc = sealroom_client_wait(c, rid, 30000);
        if (rc == SEALROOM_OK) {
            s->have_pk[i] = sealroom_identity_public_key(s->pk[i], sizeof s->pk[i], id) == 0;
        } else if (rc != SEALROOM_E_CONFLICT) {
            /* CONFLICT: someone else registered a key for this user; it can
             * still be a member (its key is fetched), not the owner. */
            note_error(b, "%s: identity register: %s: %s", b->cl[i].bare, sealroom_strerror(rc),
                       sealroom_ctx_last_error(sealroom_client_ctx(c)));
            sealroom_identity_free(id);
            sealroom_client_free(c);
            return false;
        }
        if (!have_owner && s->have_pk[i]) {
            s->owner = c;
            s->owner_idx = i;
            have_owner = true;
        } else {
            sealroom_client_free(c);
        }
        sealroom_identity_free(id);
    }
    if (!have_owner) note_error(b, "no benchmark user could register its identity");
    return have_owner;
}

static bool sr_setup_room(bench *b, sr_setup *s, unsigned n)
{
    sealroom_ctx *ctx = sealroom_client_ctx(s->owner);
    const char *owner = b->cl[s->owner_idx].bare;
    uint32_t rid = 0;
    if (!sr_wait(b, s->owner, sealroom_room_create(ctx, &rid, b->room), &rid, "room create", owner))
        return false;
    for (unsigned i = 0; i < n; i++) {
        if (i == s->owner_idx) continue;
        if (!sr_wait(b, s->owner,
                     sealroom_room_add_member(ctx, &rid, b->room, b->cl[i].bare,
                                              SEALROOM_ROLE_MEMBER,
                                              s->have_pk[i] ? s->pk[i] : NULL),
                     &rid, "add member", b->cl[i].bare))
            return false;
    }
    for (unsigned i = 0; i < b->ncl; i++) b->cl[i].dk_sent = false;
    if (sealroom_room_epoch(ctx, &b->epoch, b->room) != SEALROOM_OK ||
        sealroom_room_roster_version(ctx, &b->roster_version, b->room) != SEALROOM_OK) {
        note_error(b, "the room has no epoch after set-up");
        return false;
    }
    return true;
}

/* ---- sealroomd's fan-out mode ---- */

/* Runs "CMD on|off" (contrib/sealroom-dev set-fanout RUN_DIR, which returns
 * once sealroomd has reloaded). Room set-up after it takes several round
 * trips through sealroomd, so the timed messages all see the new mode. */
static bool switch_fanout(bench *b, const char *mode)
{
    char cmd[2048];
    if (b->fanout_now && strcmp(b->fanout_now, mode) == 0) return true;
    if ((size_t)snprintf(cmd, sizeof cmd, "%s %s", b->o.fanout_switch, mode) >= sizeof cmd) {
        note_error(b, "--fanout-switch command too long");
        return false;
    }
    fflush(stdout);
    int st = system(cmd);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        note_error(b, "switching fan-out %s failed (%s: status %d)", mode, cmd, st);
        return false;
    }
    b->fanout_now = mode;
    return true;
}

/* The mode sealroomd was started in, from its configuration file: on when
 * xmpp.fanout_jid names a service (the last assignment counts). */
static const char *fanout_from_conf(const char *path)
{
    char line[1024];
    const char *mode = "unknown";
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f) return mode;
    mode = "off";
    while (fgets(line, sizeof line, f)) {
        char *p = line, *v;
        while (*p == ' ' || *p == '\t')
            p++;
        if (strncmp(p, "xmpp.fanout_jid", 15) != 0) continue;
        p += 15;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p != '=') continue;
        v = p + 1;
        v[strcspn(v, "\r\n")] = '\0';
        while (*v == ' ' || *v == '\t')
            v++;
        mode = *v && strcmp(v, "\"\"") != 0 ? "on" : "off";
    }
    fclose(f);
    return mode;
}

/* ---- one timed run ---- */

static bool timed_run(bench *b, enum variant var, const plan_entry *pe, unsigned rep, sr_setup *srs,
                      sample *out)
{
    enum side side = var == VAR_MUC ? SIDE_MUC : SIDE_SEALROOM;
    char room[256];
    const char *svc = side == SIDE_SEALROOM ? b->o.service : b->o.muc_service;
    unsigned n = pe->n;
    double cpu0[4], cpu1[4], t0, t1;
    long long x0 = 0, x1 = 0, w0 = 0, w1 = 0;

    b->gen++;
    b->pe = pe;
    want_n = n;
    snprintf(room, sizeof room, "bench-%s-%c-n%u-r%u@%s", b->tag, "smp"[var], n, rep, svc);
    set_room(b, side, room);
    for (unsigned i = 0; i < n; i++) {
        client *c = &b->cl[i];
        memset(c->next_seq, 0, MAX_CLIENTS * sizeof *c->next_seq);
        c->rcvd = 0;
        c->sent = c->acked = 0;
    }
    b->per_sender = pe->total / pe->s;
    b->deliveries = 0;
    b->want = (unsigned long long)b->per_sender * pe->s * n;

    if (side == SIDE_SEALROOM) {
        if (!sr_setup_room(b, srs, n)) return false;
    } else if (!muc_setup(b, n)) {
        return false;
    }
    for (unsigned i = side == SIDE_MUC ? 1 : 0; i < n; i++)
        send_join(&b->cl[i]);
    if (!run_until(b, all_joined, 60) || b->errors) {
        note_error(b, "%s: not every occupant could join", room);
        return false;
    }
    /* Let the tail of the join presences drain so the clock sees messages only. */
    run_for(b, 0.2);

    take_cpu(b, cpu0);
    out->pg_ok = pg_counters(b, &x0, &w0);
    t0 = now_s();
    for (unsigned i = 0; i < pe->s; i++)
        pump(&b->cl[i]);
    bool done = run_until(b, run_done, b->o.run_timeout_s);
    t1 = now_s();
    take_cpu(b, cpu1);
    out->pg_ok = pg_counters(b, &x1, &w1) && out->pg_ok;

    if (!done || b->errors) {
        if (!b->errors)
            note_error(b, "%s: timed out after %u s with %llu of %llu deliveries", room,
                       b->o.run_timeout_s, b->deliveries, b->want);
        return false;
    }
    out->wall_s = t1 - t0;
    for (int k = 0; k < 4; k++)
        out->cpu_s[k] = cpu1[k] - cpu0[k];
    out->xids = x1 - x0 - 1; /* minus our own probe */
    out->wal_bytes = w1 - w0;

    for (unsigned i = 0; i < n; i++)
        xmpp_send_raw_string(b->cl[i].conn, "<presence type='unavailable' to='%s/%s'/>", b->room,
                             b->cl[i].nick);
    if (!run_until(b, all_left, 30)) {
        note_error(b, "%s: not every occupant could leave", room);
        return false;
    }
    return true;
}

/* ---- reporting ---- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, unsigned n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void print_machine(bench *b)
{
    char model[256] = "unknown", line[512], pgv[64], sync[32], fsync[32];
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0) {
            char *p = strchr(line, ':');
            if (p) {
                snprintf(model, sizeof model, "%s", p + 2);
                model[strcspn(model, "\n")] = '\0';
            }
            break;
        }
    }
    if (f) fclose(f);
    pg_show(b, "server_version", pgv, sizeof pgv);
    pg_show(b, "synchronous_commit", sync, sizeof sync);
    pg_show(b, "fsync", fsync, sizeof fsync);
    printf("machine: %ld cores, %s\n", sysconf(_SC_NPROCESSORS_ONLN), model);
    printf("versions: PostgreSQL %s, %s %s, libsodium %s, libstrophe %s, libsealroom %s\n", pgv,
           b->o.server, b->o.xmpp_version, sodium_version_string(), BENCH_STROPHE_VERSION,
           sealroom_version());
    printf("postgresql: synchronous_commit=%s fsync=%s\n", sync, fsync);
    printf("parameters: repetitions %u per side, interleaved sealroom/%s per repetition; "
           "payload %d random bytes (base64 in <sealed/>; baseline: plaintext <body/> of equal "
           "stanza length); fresh room per run\n",
           b->o.reps, side_name(b, SIDE_MUC), PAYLOAD_BYTES);
    if (b->o.fanout_switch)
        printf("parameters: fanout=on for the sealroom figures (targets); fanout=off as a third "
               "side, sealroom-nofanout, interleaved sealroom/%s/sealroom-nofanout (switched by "
               "sealroomd config reload between runs, outside the clock)\n",
               side_name(b, SIDE_MUC));
    else
        printf("parameters: fanout=%s (sealroomd's xmpp.fanout_jid: %s)\n", b->o.fanout,
               strcmp(b->o.fanout, "on") == 0    ? "the XMPP server copies each reflection"
               : strcmp(b->o.fanout, "off") == 0 ? "sealroomd sends one copy per occupant"
                                                 : "configuration not readable");
    for (unsigned i = 0; i < b->o.nplan; i++) {
        const plan_entry *p = &b->o.plan[i];
        printf("parameters: n%u: %u occupants, %u senders x %u messages = %u messages per run, "
               "window %u per sender, clock stops when all %u occupants received all\n",
               p->n, p->n, p->s, p->total / p->s, p->total / p->s * p->s, p->window, p->n);
    }
    printf("cpu: from /proc/PID/stat utime+stime of sealroomd (pid %d), %s (pid %d), "
           "PostgreSQL (postmaster pid %d and its backends) and getrusage of this client\n",
           b->o.pid_sealroomd, b->o.server, b->o.pid_xmpp, b->o.pid_pg);
    fflush(stdout);
}

/* ---- options ---- */

static bool parse_plan(options *o, const char *spec)
{
    char *dup = strdup(spec), *save = NULL;
    o->nplan = 0;
    for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        plan_entry p;
        if (o->nplan == MAX_PLAN ||
            sscanf(t, "%u:%u:%u:%u", &p.n, &p.s, &p.total, &p.window) != 4 || p.n < 1 ||
            p.n > MAX_CLIENTS || p.s < 1 || p.s > p.n || p.total < p.s || p.window < 1 ||
            p.window > MAX_WINDOW) {
            free(dup);
            return false;
        }
        o->plan[o->nplan++] = p;
    }
    free(dup);
    return o->nplan > 0;
}

static const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && *v ? v : def;
}

static int read_pidfile(const char *dir, const char *name)
{
    char path[1024];
    int pid = 0;
    if (!dir) return 0;
    snprintf(path, sizeof path, "%s/pids/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%d", &pid) != 1) pid = 0;
        fclose(f);
    }
    return pid;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: bench_groupchat [options]\n"
            "  --plan N:S:T:W[,...]  occupants:senders:messages per run:window per sender\n"
            "                        (default 2:1:4000:32,10:10:4000:4,100:100:2000:1)\n"
            "  --reps R              repetitions per side (default 5)\n"
            "  --smoke               plan 2:1:200:8,10:10:200:2, 1 repetition\n"
            "  --users PREFIX        users PREFIX001@domain ... (default bench)\n"
            "  --host H --port P --domain D --service S --muc-service M --password PW\n"
            "  --server NAME --server-version V   the XMPP server, for the report\n"
            "  --pg CONNINFO         PostgreSQL of sealroomd (versions, transactions, WAL)\n"
            "  --pid-sealroomd P --pid-xmpp P --pid-pg P   processes to account CPU to\n"
            "  --timeout SECONDS     per run (default 300)\n"
            "  --fanout on|off       sealroomd's fan-out mode, for the report (default: read\n"
            "                        from $SEALROOM_TEST_SEALROOMD_CONF)\n"
            "  --fanout-switch CMD   run \"CMD on\" / \"CMD off\" to switch sealroomd's fan-out:\n"
            "                        Sealroom runs with fan-out on (the figures with targets)\n"
            "                        and, interleaved, with it off (supplementary figures)\n"
            "  --only SIDE           run one side only, sealroom, muc or nofanout (for\n"
            "                        profiling: no RESULT lines)\n"
            "Defaults come from the SEALROOM_TEST_* environment of contrib/sealroom-dev env.\n");
}

static int parse_options(options *o, int argc, char **argv)
{
    const char *rd = getenv("SEALROOM_TEST_RUN_DIR");
    o->host = env_or("SEALROOM_TEST_XMPP_HOST", "127.0.0.1");
    o->port = (unsigned)atoi(env_or("SEALROOM_TEST_C2S_PORT", "5222"));
    o->domain = env_or("SEALROOM_TEST_DOMAIN", "localhost");
    o->service = env_or("SEALROOM_TEST_SERVICE", "rooms.localhost");
    o->muc_service = env_or("SEALROOM_TEST_MUC_SERVICE", "muc.localhost");
    o->password = env_or("SEALROOM_TEST_PASSWORD", "secret");
    o->pg = getenv("SEALROOM_TEST_PG");
    o->server = env_or("SEALROOM_TEST_SERVER", "prosody");
    o->user_prefix = "bench";
    o->xmpp_version = NULL;
    o->reps = 5;
    o->run_timeout_s = 300;
    o->fanout = fanout_from_conf(getenv("SEALROOM_TEST_SEALROOMD_CONF"));
    o->fanout_switch = NULL;
    o->only = -1;
    o->pid_sealroomd = read_pidfile(rd, "sealroomd");
    o->pid_xmpp = read_pidfile(rd, o->server);
    o->pid_pg = read_pidfile(rd, "postgres");
    parse_plan(o, "2:1:4000:32,10:10:4000:4,100:100:2000:1");

    enum {
        O_PLAN = 1,
        O_REPS,
        O_SMOKE,
        O_USERS,
        O_HOST,
        O_PORT,
        O_DOMAIN,
        O_SERVICE,
        O_MUC,
        O_PW,
        O_SERVER,
        O_SERVER_V,
        O_PG,
        O_PSR,
        O_PX,
        O_PPG,
        O_TIMEOUT,
        O_FANOUT,
        O_FSWITCH,
        O_ONLY,
        O_HELP
    };
    static const struct option lo[] = {{"plan", 1, 0, O_PLAN},
                                       {"reps", 1, 0, O_REPS},
                                       {"smoke", 0, 0, O_SMOKE},
                                       {"users", 1, 0, O_USERS},
                                       {"host", 1, 0, O_HOST},
                                       {"port", 1, 0, O_PORT},
                                       {"domain", 1, 0, O_DOMAIN},
                                       {"service", 1, 0, O_SERVICE},
                                       {"muc-service", 1, 0, O_MUC},
                                       {"password", 1, 0, O_PW},
                                       {"server", 1, 0, O_SERVER},
                                       {"server-version", 1, 0, O_SERVER_V},
                                       {"pg", 1, 0, O_PG},
                                       {"pid-sealroomd", 1, 0, O_PSR},
                                       {"pid-xmpp", 1, 0, O_PX},
                                       {"pid-pg", 1, 0, O_PPG},
                                       {"timeout", 1, 0, O_TIMEOUT},
                                       {"fanout", 1, 0, O_FANOUT},
                                       {"fanout-switch", 1, 0, O_FSWITCH},
                                       {"only", 1, 0, O_ONLY},
                                       {"help", 0, 0, O_HELP},
                                       {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case O_PLAN:
            if (!parse_plan(o, optarg)) {
                fprintf(stderr, "bad --plan '%s'\n", optarg);
                return 2;
            }
            break;
        case O_REPS:
            o->reps = (unsigned)atoi(optarg);
            break;
        case O_SMOKE:
            parse_plan(o, "2:1:200:8,10:10:200:2");
            o->reps = 1;
            break;
        case O_USERS:
            o->user_prefix = optarg;
            break;
        case O_HOST:
            o->host = optarg;
            break;
        case O_PORT:
            o->port = (unsigned)atoi(optarg);
            break;
        case O_DOMAIN:
            o->domain = optarg;
            break;
        case O_SERVICE:
            o->service = optarg;
            break;
        case O_MUC:
            o->muc_service = optarg;
            break;
        case O_PW:
            o->password = optarg;
            break;
        case O_SERVER:
            o->server = optarg;
            break;
        case O_SERVER_V:
            o->xmpp_version = optarg;
            break;
        case O_PG:
            o->pg = optarg;
            break;
        case O_PSR:
            o->pid_sealroomd = atoi(optarg);
            break;
        case O_PX:
            o->pid_xmpp = atoi(optarg);
            break;
        case O_PPG:
            o->pid_pg = atoi(optarg);
            break;
        case O_TIMEOUT:
            o->run_timeout_s = (unsigned)atoi(optarg);
            break;
        case O_FANOUT:
            if (strcmp(optarg, "on") != 0 && strcmp(optarg, "off") != 0) {
                fprintf(stderr, "bad --fanout '%s' (on or off)\n", optarg);
                return 2;
            }
            o->fanout = optarg;
            break;
        case O_FSWITCH:
            o->fanout_switch = optarg;
            break;
        case O_ONLY:
            o->only = strcmp(optarg, "sealroom") == 0   ? VAR_SEALROOM
                      : strcmp(optarg, "muc") == 0      ? VAR_MUC
                      : strcmp(optarg, "nofanout") == 0 ? VAR_NOFANOUT
                                                        : -2;
            if (o->only == -2) {
                fprintf(stderr, "bad --only '%s' (sealroom, muc or nofanout)\n", optarg);
                return 2;
            }
            break;
        case O_HELP:
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc || o->reps < 1 || o->port < 1 || o->port > 65535) {
        usage(stderr);
        return 2;
    }
    if (o->only == VAR_NOFANOUT && !o->fanout_switch) {
        fprintf(stderr, "--only nofanout needs --fanout-switch\n");
        return 2;
    }
    /* The switch starts every Sealroom run with fan-out on. */
    if (o->fanout_switch) o->fanout = "on";
    return 0;
}

static const char *guess_xmpp_version(const char *server)
{
    static char v[64];
    FILE *f;
    snprintf(v, sizeof v, "unknown");
    if (strcmp(server, "prosody") == 0 && (f = fopen("/usr/lib/prosody/prosody.version", "r"))) {
        if (fgets(v, sizeof v, f)) v[strcspn(v, "\n")] = '\0';
        fclose(f);
    }
    return v;
}

/* ---- main ---- */

int main(int argc, char **argv)
{
    static bench B;
    bench *b = &B;
    sr_setup *srs = calloc(1, sizeof *srs);
    int rc = parse_options(&b->o, argc, argv);
    if (rc) return rc;
    if (!srs || sodium_init() < 0) return 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!b->o.xmpp_version) b->o.xmpp_version = guess_xmpp_version(b->o.server);
    b->clk_tck = sysconf(_SC_CLK_TCK);
    {
        unsigned char r[4];
        randombytes_buf(r, sizeof r);
        snprintf(b->tag, sizeof b->tag, "%02x%02x%02x%02x", r[0], r[1], r[2], r[3]);
    }
    if (b->o.pg) {
        b->pg = PQconnectdb(b->o.pg);
        if (PQstatus(b->pg) != CONNECTION_OK) {
            fprintf(stderr, "bench: PostgreSQL (%s): %s; transaction counts unavailable\n", b->o.pg,
                    PQerrorMessage(b->pg));
            PQfinish(b->pg);
            b->pg = NULL;
        }
    }

    unsigned maxn = 0;
    for (unsigned i = 0; i < b->o.nplan; i++)
        if (b->o.plan[i].n > maxn) maxn = b->o.plan[i].n;

    printf("# groupchat throughput: sealroom vs %s\n", side_name(b, SIDE_MUC));
    print_machine(b);

    xmpp_initialize();
    b->ctx = xmpp_ctx_new(NULL, NULL);
    unsigned nres = b->o.nplan, nvar = b->o.fanout_switch ? NVARIANT : 2;
    sample *res[NVARIANT] = {NULL, NULL, NULL};
    bool ok = b->ctx != NULL;
    for (unsigned vi = 0; vi < nvar; vi++)
        ok = (res[vi] = calloc((size_t)nres * b->o.reps, sizeof(sample))) && ok;

    double setup0 = now_s();
    name_clients(b, maxn);
    if (ok && !(ok = sr_register_all(b, srs, maxn)))
        fprintf(stderr, "bench: identity set-up failed: %s\n", b->first_error);
    if (ok && !(ok = connect_all(b, maxn)))
        fprintf(stderr, "bench: connecting %u clients failed: %s\n", maxn, b->first_error);
    if (ok)
        printf("setup: %u users connected, identities registered (owner %s) in %.1f s\n", maxn,
               b->cl[srs->owner_idx].bare, now_s() - setup0);

    for (unsigned pi = 0; ok && pi < nres; pi++) {
        const plan_entry *pe = &b->o.plan[pi];
        for (unsigned rep = 0; ok && rep < b->o.reps; rep++) {
            for (unsigned vi = 0; ok && vi < nvar; vi++) {
                enum variant var = (enum variant)vi;
                sample *s = &res[vi][pi * b->o.reps + rep];
                if (b->o.only >= 0 && b->o.only != (int)vi) continue;
                if (b->o.fanout_switch && var != VAR_MUC &&
                    !switch_fanout(b, var == VAR_NOFANOUT ? "off" : "on")) {
                    fprintf(stderr, "bench: %s\n", b->first_error);
                    ok = false;
                    break;
                }
                if (!timed_run(b, var, pe, rep + 1, srs, s)) {
                    fprintf(stderr, "bench: n%u %s repetition %u failed: %s\n", pe->n,
                            variant_name(b, var), rep + 1, b->first_error);
                    ok = false;
                    break;
                }
                unsigned msgs = b->per_sender * pe->s;
                printf("run n%u %-17s rep %u: %u msgs in %.3f s = %.0f msgs/s; cpu s: sealroomd "
                       "%.2f, %s %.2f, postgres %.2f, client %.2f; write xacts %lld, WAL %lld B\n",
                       pe->n, variant_name(b, var), rep + 1, msgs, s->wall_s, msgs / s->wall_s,
                       s->cpu_s[0], b->o.server, s->cpu_s[1], s->cpu_s[2], s->cpu_s[3],
                       s->pg_ok ? s->xids : -1, s->pg_ok ? s->wal_bytes : -1);
            }
        }
    }
    /* Leave sealroomd as the product runs it. */
    if (b->o.fanout_switch && b->fanout_now && strcmp(b->fanout_now, "on") != 0 &&
        !switch_fanout(b, "on"))
        fprintf(stderr, "bench: %s\n", b->first_error);

    if (ok && b->o.only >= 0)
        printf("\n--only %s: one side, no RESULT lines\n",
               variant_name(b, (enum variant)b->o.only));
    if (ok && b->o.only < 0) {
        static const char *const who[4] = {"sealroomd", NULL, "postgres", "client"};
        /* RESULT name parts per variant: throughput prefix, CPU prefix. */
        static const char *const tput[NVARIANT] = {"", NULL, "nofanout."};
        static const char *const cpun[NVARIANT] = {"sealroom", "baseline", "nofanout"};
        unsigned met = 0, targets = 0, R = b->o.reps;
        double *v = calloc(R, sizeof *v);
        double(*cpu)[NVARIANT][5] = calloc(nres, sizeof *cpu); /* medians, us/msg; [4] total */
        printf("\n");
        if (v && cpu) {
            printf("cpu per message, us (medians): %-4s %-17s %9s %9s %9s %9s %9s\n", "n", "side",
                   "sealroomd", b->o.server, "postgres", "client", "total");
            for (unsigned pi = 0; pi < nres; pi++) {
                const plan_entry *pe = &b->o.plan[pi];
                double msgs = (double)(pe->total / pe->s * pe->s);
                for (unsigned vi = 0; vi < nvar; vi++) {
                    for (int k = 0; k < 5; k++) {
                        for (unsigned r = 0; r < R; r++) {
                            const double *c = res[vi][pi * R + r].cpu_s;
                            v[r] = (k < 4 ? c[k] : c[0] + c[1] + c[2] + c[3]) * 1e6 / msgs;
                        }
                        cpu[pi][vi][k] = median(v, R);
                    }
                    printf("cpu per message, us (medians): %-4u %-17s %9.1f %9.1f %9.1f %9.1f "
                           "%9.1f\n",
                           pe->n, variant_name(b, (enum variant)vi), cpu[pi][vi][0], cpu[pi][vi][1],
                           cpu[pi][vi][2], cpu[pi][vi][3], cpu[pi][vi][4]);
                }
            }
            printf("\n");
        }
        for (unsigned vi = 0; vi < nvar && v && cpu; vi++) {
            if (vi == VAR_MUC) continue;
            for (unsigned pi = 0; pi < nres; pi++) {
                const plan_entry *pe = &b->o.plan[pi];
                double msgs = (double)(pe->total / pe->s * pe->s), rate[2];
                for (int k = 0; k < 2; k++) {
                    unsigned src = k == 0 ? vi : VAR_MUC;
                    for (unsigned r = 0; r < R; r++)
                        v[r] = msgs / res[src][pi * R + r].wall_s;
                    rate[k] = median(v, R);
                }
                double ratio = rate[0] / rate[1];
                if (vi == VAR_SEALROOM) {
                    targets++;
                    if (ratio >= 1.0) met++;
                }
                printf("RESULT groupchat.n%u.%smsgs_per_s %.0f msgs/s baseline %s %.0f msgs/s "
                       "ratio %.3f target %s\n",
                       pe->n, tput[vi], rate[0], side_name(b, SIDE_MUC), rate[1], ratio,
                       vi == VAR_SEALROOM ? ">=1.0" : "-");
            }
        }
        for (unsigned pi = 0; pi < nres && v && cpu; pi++) {
            const plan_entry *pe = &b->o.plan[pi];
            double msgs = (double)(pe->total / pe->s * pe->s);
            for (unsigned vi = 0; vi < nvar; vi++) {
                for (int k = 0; k < 4; k++) {
                    if (vi == VAR_MUC && k == 0) continue; /* no sealroomd in the baseline */
                    printf("RESULT groupchat.n%u.%s.cpu.%s_us_per_msg %.1f us/msg baseline none "
                           "- - ratio - target -\n",
                           pe->n, cpun[vi], who[k] ? who[k] : b->o.server, cpu[pi][vi][k]);
                }
                for (unsigned r = 0; r < R; r++) {
                    const sample *s = &res[vi][pi * R + r];
                    v[r] = (s->cpu_s[0] + s->cpu_s[1] + s->cpu_s[2] + s->cpu_s[3]) / s->wall_s;
                }
                printf("RESULT groupchat.n%u.%s.cpu.busy_cores %.2f cores baseline none - - "
                       "ratio - target -\n",
                       pe->n, cpun[vi], median(v, R));
                if (vi == VAR_MUC) continue;
                bool pg_ok = true;
                for (unsigned r = 0; r < R; r++)
                    pg_ok = pg_ok && res[vi][pi * R + r].pg_ok;
                if (!pg_ok) continue;
                for (unsigned r = 0; r < R; r++) {
                    const sample *s = &res[vi][pi * R + r];
                    v[r] = s->xids > 0 ? msgs / (double)s->xids : 0;
                }
                printf("RESULT groupchat.n%u.%s.msgs_per_commit %.1f msgs/xact baseline "
                       "none - - ratio - target -\n",
                       pe->n, cpun[vi], median(v, R));
                for (unsigned r = 0; r < R; r++)
                    v[r] = (double)res[vi][pi * R + r].wal_bytes / msgs;
                printf("RESULT groupchat.n%u.%s.wal_bytes_per_msg %.0f B/msg baseline none "
                       "- - ratio - target -\n",
                       pe->n, cpun[vi], median(v, R));
            }
        }
        if (!v || !cpu) {
            fprintf(stderr, "bench: out of memory for the report\n");
            ok = false;
        } else {
            printf("VERDICT met %u/%u\n", met, targets);
            if (met < targets)
                printf("target missed: Sealroom (fanout=%s) is slower than %s for %u of %u "
                       "occupant counts (target ratio >= 1.0)\n",
                       b->o.fanout, side_name(b, SIDE_MUC), targets - met, targets);
        }
        free(cpu);
        free(v);
    }

    for (unsigned i = 0; i < b->ncl; i++) {
        if (b->cl[i].conn_state == 1) xmpp_disconnect(b->cl[i].conn);
    }
    if (b->ncl) run_for(b, 0.3);
    for (unsigned i = 0; i < b->ncl; i++) {
        xmpp_conn_release(b->cl[i].conn);
        free(b->cl[i].next_seq);
        free(b->cl[i].inflight);
    }
    sealroom_client_free(srs->owner);
    free(srs);
    for (unsigned vi = 0; vi < NVARIANT; vi++)
        free(res[vi]);
    if (b->ctx) xmpp_ctx_free(b->ctx);
    xmpp_shutdown();
    if (b->pg) PQfinish(b->pg);
    return ok ? 0 : 1;
}
