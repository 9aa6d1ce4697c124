/* Accessors for sealroom_event, so the event layout can change without
 * breaking the ABI. Every accessor tolerates NULL. */
#include "internal.h"

sealroom_event_type sealroom_event_get_type(const sealroom_event *ev)
{
    return ev ? ev->type : (sealroom_event_type)0;
}

uint32_t sealroom_event_request_id(const sealroom_event *ev)
{
    return ev ? ev->request_id : 0;
}

int sealroom_event_request_kind(const sealroom_event *ev)
{
    return ev ? ev->kind : 0;
}

int sealroom_event_result(const sealroom_event *ev)
{
    return ev ? ev->result : SEALROOM_E_INVALID;
}

const char *sealroom_event_error_text(const sealroom_event *ev)
{
    return ev ? ev->error_text : NULL;
}

const char *sealroom_event_room(const sealroom_event *ev)
{
    return ev ? ev->room : NULL;
}

const char *sealroom_event_nick(const sealroom_event *ev)
{
    return ev ? ev->nick : NULL;
}

const char *sealroom_event_jid(const sealroom_event *ev)
{
    return ev ? ev->jid : NULL;
}

const char *sealroom_event_stanza_id(const sealroom_event *ev)
{
    return ev ? ev->stanza_id : NULL;
}

const char *sealroom_event_origin_id(const sealroom_event *ev)
{
    return ev ? ev->origin_id : NULL;
}

const unsigned char *sealroom_event_payload(const sealroom_event *ev, size_t *len)
{
    if (len)
        *len = ev ? ev->payload_len : 0;
    return ev ? ev->payload : NULL;
}

int64_t sealroom_event_timestamp_ms(const sealroom_event *ev)
{
    return ev ? ev->timestamp_ms : 0;
}

int sealroom_event_is_history(const sealroom_event *ev)
{
    return ev ? ev->history : 0;
}

int sealroom_event_is_self(const sealroom_event *ev)
{
    return ev ? ev->self : 0;
}

const char *sealroom_event_history_first(const sealroom_event *ev)
{
    return ev ? ev->first : NULL;
}

const char *sealroom_event_history_last(const sealroom_event *ev)
{
    return ev ? ev->last : NULL;
}

int sealroom_event_history_complete(const sealroom_event *ev)
{
    return ev ? ev->complete : 0;
}

const unsigned char *sealroom_event_public_key(const sealroom_event *ev)
{
    return ev ? ev->pk : NULL;
}

uint64_t sealroom_event_roster_version(const sealroom_event *ev)
{
    return ev ? ev->roster_version : 0;
}

uint64_t sealroom_event_epoch(const sealroom_event *ev)
{
    return ev ? ev->epoch : 0;
}

const char *sealroom_event_fingerprint(const sealroom_event *ev)
{
    return ev ? ev->fingerprint : NULL;
}

const char *sealroom_event_previous_fingerprint(const sealroom_event *ev)
{
    return ev ? ev->previous_fingerprint : NULL;
}
