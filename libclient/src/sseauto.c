/* Compaction the library does by itself (DESIGN §7: log-structured merges
 * keep a room's live batches few, which keeps searches fast). The room
 * marks its answers to <batch/>, <search/> and <state/> with
 * compact='due' when a <compact/> lease would find work; we then run the
 * jobs of sealroom_room_compact (ssecompact.c) as internal requests, one
 * at a time per room, as search/autocompact.h decides: on while the room
 * grants leases, backing off after a failure. The application sees each
 * segment made as SEALROOM_EVENT_INDEX_COMPACTED and can switch this off
 * with sealroom_ctx_set_auto_compact. */
#include "internal.h"
#include "sse.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* What a running job's completion needs: the room, by JID (rooms outlive
 * requests, but the JID is what requests name them by), and the job, to
 * tell a room without work from a lease that expired. */
typedef struct auto_job {
    char *room;
    struct sr_sse_compaction *job;
} auto_job;

static void auto_job_free(void *p)
{
    auto_job *a = p;
    if (!a)
        return;
    free(a->room);
    sr_sse_compaction_release(a->job);
    free(a);
}

static uint64_t now_of(const sealroom_ctx *ctx)
{
    return ctx->have_time ? ctx->now_ms : 0;
}

/* A job may start: switched on, online, in the room, keyring at hand. */
static bool can_run(const sealroom_ctx *ctx, const sr_room *room)
{
    const sr_sse_room *s = room->sse;
    return !ctx->auto_compact_off && ctx->link_up && ctx->identity && room->want_joined &&
           room->joined && s && !s->disabled && s->state_known && s->keyring &&
           !s->auto_request;
}

static void start_job(sealroom_ctx *ctx, sr_room *room);

static void job_done(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                     const char *text)
{
    auto_job *a = arg;
    sr_room *room = sr_room_find(ctx, a->room);
    sr_sse_room *s = room ? room->sse : NULL;
    bool leased = sr_sse_compaction_leased(a->job);
    auto_job_free(a);
    (void)answer;
    if (!s)
        return;
    s->auto_request = 0;
    sr_sse_auto_outcome how;
    if (rc == SEALROOM_OK)
        how = SR_SSE_AUTO_COMMITTED;
    else if (!ctx->link_up || !room->want_joined)
        how = SR_SSE_AUTO_CANCELLED;
    else if (rc == SEALROOM_E_NOT_FOUND && !leased)
        how = SR_SSE_AUTO_NOTHING;
    else
        how = SR_SSE_AUTO_FAILED;
    bool again = sr_sse_autocompact_done(&s->autoc, how, now_of(ctx));
    if (how == SR_SSE_AUTO_FAILED)
        sr_log(ctx, SEALROOM_LOG_WARN,
               "%s: automatic compaction failed (%s); trying again after %" PRIu64
               " ms if the room still asks",
               room->jid, text ? text : sealroom_strerror(rc),
               s->autoc.resume_ms - now_of(ctx));
    if (how == SR_SSE_AUTO_COMMITTED) {
        sealroom_event ev = {0};
        ev.type = SEALROOM_EVENT_INDEX_COMPACTED;
        ev.room = room->jid;
        sr_emit(ctx, &ev);
    }
    /* The event ran application code: look at the switch and room again. */
    if (again && can_run(ctx, room))
        start_job(ctx, room);
}

static void start_job(sealroom_ctx *ctx, sr_room *room)
{
    sr_sse_room *s = room->sse;
    sr_request *r = sr_request_new(ctx, SEALROOM_REQ_COMPACT);
    auto_job *a = calloc(1, sizeof *a);
    if (!r || !a || !(r->room = sr_strdup(room->jid)) || !(a->room = sr_strdup(room->jid)) ||
        !(a->job = sr_sse_compaction_attach(r))) {
        auto_job_free(a);
        if (r) {
            sr_request_unlink(ctx, r);
            sr_request_free(r);
        }
        sr_log(ctx, SEALROOM_LOG_WARN, "%s: out of memory starting automatic compaction",
               room->jid);
        sr_sse_autocompact_started(&s->autoc);
        sr_sse_autocompact_done(&s->autoc, SR_SSE_AUTO_FAILED, now_of(ctx));
        return;
    }
    r->cb = job_done;
    r->cb_arg = a;
    r->cb_free = auto_job_free;
    s->auto_request = r->id;
    sr_sse_autocompact_started(&s->autoc);
    /* May complete at once (the IQ could not be sent): job_done then ran. */
    sr_sse_compaction_start(ctx, r);
}

void sr_sse_auto_note(sealroom_ctx *ctx, sr_room *room, xmpp_stanza_t *el)
{
    const char *v = el ? xmpp_stanza_get_attribute(el, "compact") : NULL;
    sr_sse_room *s = room->sse;
    if (!v || strcmp(v, "due") != 0 || !s || ctx->auto_compact_off)
        return;
    if (sr_sse_autocompact_due(&s->autoc, now_of(ctx)) && can_run(ctx, room))
        start_job(ctx, room);
}

void sr_sse_auto_tick(sealroom_ctx *ctx, sr_room *room, uint64_t now_ms)
{
    sr_sse_room *s = room->sse;
    if (!s)
        return;
    /* Out of the room without leaving (removed, kicked): end the job. */
    if (s->auto_request && !room->want_joined)
        sr_sse_auto_stop(ctx, room);
    if (sr_sse_autocompact_tick(&s->autoc, now_ms) && can_run(ctx, room))
        start_job(ctx, room);
}

void sr_sse_auto_stop(sealroom_ctx *ctx, sr_room *room)
{
    sr_sse_room *s = room->sse;
    sr_request *r = s && s->auto_request ? sr_request_by_id(ctx, s->auto_request) : NULL;
    if (r)
        sr_request_done(ctx, r, SEALROOM_E_STATE, "not in the room any more", NULL);
    if (s) {
        s->auto_request = 0;
        sr_sse_autocompact_forget(&s->autoc);
    }
}

void sealroom_ctx_set_auto_compact(sealroom_ctx *ctx, int enabled)
{
    if (!ctx)
        return;
    ctx->auto_compact_off = !enabled;
    if (!enabled)
        for (sr_room *room = ctx->rooms; room; room = room->next)
            if (room->sse)
                sr_sse_autocompact_forget(&room->sse->autoc);
}
