/* libsealroom's libstrophe adapter: attach a Sealroom core to an existing
 * xmpp_conn_t owned by your application. Same thread-safety rule as
 * sealroom.h: the ctx, like the conn, belongs to the thread running the
 * libstrophe event loop. */
#ifndef SEALROOM_STROPHE_H
#define SEALROOM_STROPHE_H

#include <sealroom/sealroom.h>
#include <strophe.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Create a core bound to conn (borrowed: it must outlive the ctx) for the
 * service service_jid. The user JID is the conn's JID. The adapter installs
 * a libstrophe handler that feeds every stanza from the service's domain
 * into the core and sends the core's stanzas with xmpp_send, so stream
 * management accounting stays intact. callbacks->send_xml is ignored (may
 * be NULL); log, on_event and user are used. Stanzas the core consumes are
 * still seen by your own handlers (libstrophe runs every handler).
 *
 * Your connection handler must call sealroom_ctx_link_down() on
 * XMPP_CONN_DISCONNECT and sealroom_ctx_link_up() once reconnected (after
 * sending initial presence), and call sealroom_ctx_tick() periodically.
 * Free with sealroom_strophe_detach. Errors: INVALID, NOMEM. */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_strophe_attach(sealroom_ctx **out,
                                                              xmpp_conn_t *conn,
                                                              const char *service_jid,
                                                              const sealroom_callbacks *callbacks);

/* Remove the handlers from the conn and free the ctx. NULL allowed. Must
 * not be called from inside a callback of this ctx. */
SEALROOM_API void sealroom_strophe_detach(sealroom_ctx *ctx);

#ifdef __cplusplus
}
#endif

#endif
