/* Administration through the protocol sealroomd already speaks (as PgBouncer
 * answers SHOW in its own protocol): XEP-0050 ad-hoc commands on the service
 * JID, for the bare JIDs in admin.jids only. "stats" reports the counters an
 * operator needs to see the daemon is healthy: link, database and group
 * commit, rooms and occupants in the cache, messages stored and refused,
 * the search index and its workers;
 * "sweep" the progress of the archive re-keying sweep (sweep.h) and of
 * erasing the tokens it no longer needs (tokenerase.c). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "service.h"
#include "stanza.h"
#include "searchpool.h"
#include "sweep.h"

#define NODE_STATS "stats"
#define NODE_SWEEP "sweep"

static void add_field(xmpp_stanza_t *form, const char *var, const char *label, const char *value)
{
    xmpp_stanza_t *f = st_add(form, "field", NULL);
    if (!f) return;
    xmpp_stanza_set_attribute(f, "var", var);
    xmpp_stanza_set_attribute(f, "label", label);
    st_add_text(f, "value", NULL, value);
}

static void add_number(xmpp_stanza_t *form, const char *var, const char *label,
                       unsigned long long v)
{
    char num[32];
    snprintf(num, sizeof num, "%llu", v);
    add_field(form, var, label, num);
}

void admin_list_commands(rooms *r, xmpp_stanza_t *iq)
{
    char sender[SR_BARE_JID_MAX];
    xmpp_stanza_t *reply = st_iq_result(iq, svc_jid(r));
    xmpp_stanza_t *q = reply ? st_add(reply, "query", NS_DISCO_ITEMS) : NULL;
    if (!q) {
        if (reply) xmpp_stanza_release(reply);
        svc_error(r, iq, svc_jid(r), "wait", "resource-constraint", NULL, "out of memory");
        return;
    }
    xmpp_stanza_set_attribute(q, "node", NS_COMMANDS);
    /* Others see an empty list: the commands exist only for admins. */
    if (svc_sender_bare(iq, sender, sizeof sender) && svc_is_admin(r, sender)) {
        xmpp_stanza_t *item = st_add(q, "item", NULL);
        if (item) {
            xmpp_stanza_set_attribute(item, "jid", svc_jid(r));
            xmpp_stanza_set_attribute(item, "node", NODE_STATS);
            xmpp_stanza_set_attribute(item, "name", "Service statistics");
        }
        item = st_add(q, "item", NULL);
        if (item) {
            xmpp_stanza_set_attribute(item, "jid", svc_jid(r));
            xmpp_stanza_set_attribute(item, "node", NODE_SWEEP);
            xmpp_stanza_set_attribute(item, "name", "Archive sweep progress");
        }
    }
    svc_send(r, reply);
}

static void stats(rooms *r, xmpp_stanza_t *iq, xmpp_stanza_t *form)
{
    db_stats ds;
    db_get_stats(r->db, &ds);
    unsigned long long occupants = 0, cached = 0;
    for (size_t i = 0; i < r->nbuckets; i++)
        for (room *rm = r->buckets[i]; rm; rm = rm->hnext) {
            cached++;
            for (occupant *o = rm->occupants; o; o = o->next) occupants++;
        }
    xmpp_stanza_set_attribute(form, "type", "result");
    st_add_text(form, "title", NULL, "sealroomd statistics");
    add_field(form, "version", "Version", SEALROOM_VERSION);
    add_field(form, "instance", "Instance", r->instance);
    add_number(form, "uptime", "Uptime (s)", (unsigned long long)(time(NULL) - r->started));
    add_field(form, "link", "XMPP link", link_is_up(r->link) ? "up" : "down");
    add_field(form, "database", "Database", db_is_ready(r->db) ? "up" : "down");
    add_number(form, "rooms-cached", "Rooms in the cache", cached);
    add_number(form, "occupants", "Occupants present", occupants);
    add_number(form, "messages-stored", "Messages stored", r->stats.messages_stored);
    add_number(form, "messages-deduplicated", "Resends answered from the archive",
               r->stats.messages_deduplicated);
    add_number(form, "requests-refused", "Requests refused with an error",
               r->stats.requests_refused);
    add_number(form, "epochs-created", "Epochs created", r->stats.epochs_created);
    add_number(form, "datakeys-stored", "Data keys stored", r->stats.datakeys_stored);
    add_number(form, "rekey-nudges", "Rekey requests sent", r->stats.rekey_nudges);
    add_number(form, "dmkd-runs-started", "Key-distribution runs started",
               r->stats.dmkd_runs_started);
    add_number(form, "dmkd-runs-committed", "Key-distribution runs that made an epoch",
               r->stats.dmkd_runs_committed);
    add_number(form, "dmkd-runs-failed", "Key-distribution runs failed or restarted",
               r->stats.dmkd_runs_failed);
    add_number(form, "dmkd-members-dropped", "Member sessions dropped from runs",
               r->stats.dmkd_members_dropped);
    add_number(form, "vaults-stored", "Vaults stored", r->stats.vaults_stored);
    add_number(form, "vault-fetches", "Vault fetches served", r->stats.vault_fetches);
    add_number(form, "vault-rate-limited", "Vault fetches refused by the rate limit",
               r->stats.vault_rate_limited);
    searchpool_stats ss;
    searchpool_get_stats(r->search, &ss);
    add_number(form, "search-keyrings", "Search keyrings stored", r->stats.search_keyrings);
    add_number(form, "search-batches", "Search batches taken", r->stats.search_batches);
    add_number(form, "search-entries", "Search index entries stored", r->stats.search_entries);
    add_number(form, "searches", "Searches answered", r->stats.searches);
    add_number(form, "searches-failed", "Searches failed on the database",
               r->stats.searches_failed);
    add_number(form, "searches-running", "Searches being evaluated now", ss.running);
    add_number(form, "searches-queued", "Searches waiting for a worker now", ss.queued);
    add_number(form, "search-cache-hits", "Search cache hits", ss.cache_hits);
    add_number(form, "search-cache-misses", "Search cache misses", ss.cache_misses);
    add_number(form, "search-cache-bytes", "Bytes held by the search cache", ss.cache_bytes);
    add_number(form, "search-leases", "Compaction leases granted", r->stats.search_leases);
    add_number(form, "search-segments", "Index segments committed", r->stats.search_segments);
    add_number(form, "search-rows-purged", "Retired index rows deleted",
               r->stats.search_rows_purged);
    add_number(form, "retractions", "Messages retracted", r->stats.retractions);
    add_number(form, "db-commits", "Group commits", ds.commits);
    add_number(form, "db-units-committed", "Write units committed", ds.units_committed);
    add_number(form, "db-units-failed", "Write units failed", ds.units_failed);
    add_number(form, "db-reads", "Reads", ds.reads);
    add_number(form, "db-reconnects", "Database reconnects", ds.reconnects);
    add_number(form, "db-queued", "Units queued now", ds.queued_units);
    add_number(form, "db-inflight", "Units in flight now", ds.inflight_units);
    (void)iq;
}

static void sweep_progress(const rooms *r, xmpp_stanza_t *form)
{
    sweep_stats st;
    sweep_get_stats(sweep_running(), &st);
    xmpp_stanza_set_attribute(form, "type", "result");
    st_add_text(form, "title", NULL, "sealroomd archive sweep");
    add_number(form, "threads", "Worker threads", st.threads);
    add_field(form, "scan", "Scan at start for rooms with tokens", st.scan_done ? "done" : "pending");
    add_number(form, "rooms-pending", "Rooms queued or being swept", st.rooms_pending);
    add_number(form, "rooms-done", "Room sweeps completed", st.rooms_done);
    add_number(form, "headers-rekeyed", "Headers re-keyed", st.headers_rekeyed);
    add_number(form, "batches", "Batches committed", st.batches);
    add_number(form, "headers-behind", "Headers behind their room's epoch (last counted)",
               st.headers_behind);
    add_number(form, "headers-undone", "Headers taken back through revoked tokens",
               st.headers_undone);
    add_number(form, "undos-finished", "Undos of revoked tokens completed", st.undos_finished);
    add_number(form, "reconnects", "Database reconnects", st.reconnects);
    add_number(form, "errors", "Room slices given up on a database error", st.errors);
    add_number(form, "checks-asked", "Re-keyed check headers sent to members to confirm",
               r->stats.checks_asked);
    add_number(form, "checks-failed", "Check headers members found wrong (unproved tokens revoked and undone)",
               r->stats.checks_failed);
    add_number(form, "tokens-erased", "Tokens erased after a member's confirmation",
               r->stats.tokens_erased);
}

void admin_handle_command(rooms *r, xmpp_stanza_t *iq, xmpp_stanza_t *cmd)
{
    char sender[SR_BARE_JID_MAX];
    if (strcmp(xmpp_stanza_get_type(iq), "set") != 0) {
        svc_error(r, iq, svc_jid(r), "modify", "bad-request", NULL, "commands are executed with set");
        return;
    }
    if (!svc_sender_bare(iq, sender, sizeof sender) || !svc_is_admin(r, sender)) {
        svc_error(r, iq, svc_jid(r), "auth", "forbidden", NULL,
                  "admin commands are for the JIDs in admin.jids");
        return;
    }
    const char *node = xmpp_stanza_get_attribute(cmd, "node");
    const char *action = xmpp_stanza_get_attribute(cmd, "action");
    if (!node || (strcmp(node, NODE_STATS) != 0 && strcmp(node, NODE_SWEEP) != 0)) {
        svc_error(r, iq, svc_jid(r), "cancel", "item-not-found", NULL, "no such command");
        return;
    }
    if (action && strcmp(action, "execute") != 0 && strcmp(action, "complete") != 0) {
        svc_error(r, iq, svc_jid(r), "modify", "bad-request", NULL,
                  "admin commands complete in one step: execute them");
        return;
    }
    xmpp_stanza_t *reply = st_iq_result(iq, svc_jid(r));
    xmpp_stanza_t *c = reply ? st_add(reply, "command", NS_COMMANDS) : NULL;
    xmpp_stanza_t *form = c ? st_add(c, "x", NS_DATA) : NULL;
    if (!form) {
        if (reply) xmpp_stanza_release(reply);
        svc_error(r, iq, svc_jid(r), "wait", "resource-constraint", NULL, "out of memory");
        return;
    }
    char session[32];
    snprintf(session, sizeof session, "%s-%" PRIu64, node, (uint64_t)++r->stats.admin_sessions);
    xmpp_stanza_set_attribute(c, "node", node);
    xmpp_stanza_set_attribute(c, "status", "completed");
    xmpp_stanza_set_attribute(c, "sessionid", session);
    if (strcmp(node, NODE_SWEEP) == 0)
        sweep_progress(r, form);
    else
        stats(r, iq, form);
    log_info(sender, "admin command %s", node);
    svc_send(r, reply);
}
