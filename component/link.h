/* The XEP-0114 link to the XMPP server over libstrophe: component-mode crash
 * workaround, handshake, reconnect with back-off, and the socket the event
 * loop polls. Everything here runs on the loop thread only. */
#ifndef SEALROOMD_LINK_H
#define SEALROOMD_LINK_H

#include <stdbool.h>
#include <strophe.h>

struct config;
/* Not "link": that name is taken by unistd.h's link(2). */
typedef struct link xmpp_link;

/* Called for every stanza received from the server (message, presence, iq). */
typedef void (*link_stanza_cb)(void *arg, xmpp_stanza_t *stanza);
/* Called when the link comes up (after the handshake) or goes down. */
typedef void (*link_state_cb)(void *arg, bool up);

xmpp_link *link_new(const struct config *cfg, link_stanza_cb on_stanza, link_state_cb on_state,
               void *arg);
void link_free(xmpp_link *l);

/* Start connecting now; later reconnects are scheduled by the link itself. */
int link_start(xmpp_link *l);
/* Send a stanza if the link is up; returns false (and drops it) otherwise.
 * The stanza is copied: the caller keeps (and releases) its reference.
 * When building replies with xmpp_stanza_reply(): it does not set `from`
 * (set it to the room or component JID) and copies xml:lang (remove it);
 * xmpp_stanza_reply_error() does set `from`. */
bool link_send(xmpp_link *l, xmpp_stanza_t *stanza);
bool link_is_up(const xmpp_link *l);
xmpp_ctx_t *link_ctx(xmpp_link *l);
const char *link_jid(const xmpp_link *l); /* the component JID */

/* Event loop integration: fd (-1 if none) and the events to poll for. */
int link_pollfd(xmpp_link *l, short *events);
/* Run libstrophe once (twice, so handler replies are flushed). */
void link_process(xmpp_link *l);
/* Graceful shutdown, first step: received stanzas are dropped from now on
 * (clients retry with idempotent ids) while replies still go out. */
void link_quiesce(xmpp_link *l);
/* Close the stream gracefully (SIGTERM); waits at most about 3 s. */
void link_stop(xmpp_link *l);

/* The workaround for libstrophe 0.12.2 component mode (XMPP-FACTS.md),
 * exposed for its unit test: allocate the conn's stream-management state by
 * a refused client connect. Returns 0 on success. */
int link_prepare_component_conn(xmpp_conn_t *conn);

#endif
