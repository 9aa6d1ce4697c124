/* The libstrophe adapter (sealroom/strophe.h): binds a core to an existing
 * xmpp_conn_t. Stanzas go both ways as xmpp_stanza_t on the conn's own
 * libstrophe context, so nothing is serialised twice and xmpp_send keeps
 * stream-management accounting intact. */
#include "internal.h"

#include <sealroom/strophe.h>
#include <string.h>

static int on_stanza(xmpp_conn_t *conn, xmpp_stanza_t *st, void *userdata)
{
    (void)conn;
    sr_receive_stanza(userdata, st);
    return 1; /* keep the handler */
}

int sealroom_strophe_attach(sealroom_ctx **out, xmpp_conn_t *conn, const char *service_jid,
                            const sealroom_callbacks *callbacks)
{
    sealroom_callbacks none;
    if (!out)
        return SEALROOM_E_INVALID;
    *out = NULL;
    if (!conn)
        return SEALROOM_E_INVALID;
    if (!callbacks) {
        memset(&none, 0, sizeof none);
        none.struct_size = sizeof none;
        callbacks = &none;
    }
    const char *jid = xmpp_conn_get_bound_jid(conn);
    if (!jid)
        jid = xmpp_conn_get_jid(conn);
    sealroom_ctx *ctx = NULL;
    int rc = sr_ctx_create(&ctx, jid, service_jid, callbacks, xmpp_conn_get_context(conn));
    if (rc < 0)
        return rc;
    ctx->conn = conn;
    xmpp_handler_add(conn, on_stanza, NULL, NULL, NULL, ctx);
    *out = ctx;
    return SEALROOM_OK;
}

void sealroom_strophe_detach(sealroom_ctx *ctx)
{
    if (!ctx)
        return;
    if (ctx->conn)
        xmpp_handler_delete(ctx->conn, on_stanza);
    sealroom_ctx_free(ctx);
}
