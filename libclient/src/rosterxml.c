/* The <roster/> element (xep/sealroom.xml, "The Roster Chain") to and from
 * sr_roster_version. Parsing is strict: the canonical bytes are rebuilt from
 * what is parsed, so anything ambiguous is refused rather than guessed. */
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/b64.h"

static bool set_attr(xmpp_stanza_t *el, const char *name, const char *value)
{
    return xmpp_stanza_set_attribute(el, name, value) == XMPP_EOK;
}

xmpp_stanza_t *sr_roster_to_xml(xmpp_ctx_t *xmpp, const sr_roster_version *v)
{
    char num[24], prev[64], sig[128], key[64];
    xmpp_stanza_t *el = sr_el(xmpp, "roster", SR_NS);
    if (!el)
        return NULL;
    snprintf(num, sizeof num, "%" PRIu64, v->version);
    sr_b64_encode(prev, sizeof prev, v->prev, sizeof v->prev);
    sr_b64_encode(sig, sizeof sig, v->sig, sizeof v->sig);
    if (!set_attr(el, "room", v->room) || !set_attr(el, "version", num) ||
        !set_attr(el, "prev", prev) || !set_attr(el, "signer", v->signer) ||
        !set_attr(el, "sig", sig))
        goto fail;
    for (unsigned i = 0; i < v->nops; i++) {
        const sr_roster_op *op = &v->ops[i];
        const char *name = op->kind == SR_OP_ADD ? "add" : op->kind == SR_OP_REMOVE ? "remove" : "role";
        xmpp_stanza_t *c = sr_el(xmpp, name, NULL);
        if (!c)
            goto fail;
        bool ok = set_attr(c, "jid", op->jid);
        if (ok && op->kind != SR_OP_REMOVE)
            ok = set_attr(c, "role", sr_role_name(op->role));
        if (ok && op->kind == SR_OP_ADD) {
            sr_b64_encode(key, sizeof key, op->key, sizeof op->key);
            ok = set_attr(c, "key", key);
        }
        if (!ok || xmpp_stanza_add_child_ex(el, c, 0) != XMPP_EOK) {
            xmpp_stanza_release(c);
            goto fail;
        }
    }
    return el;
fail:
    xmpp_stanza_release(el);
    return NULL;
}

static bool copy_jid(char dst[SR_BARE_JID_MAX], const char *src)
{
    if (!src)
        return false;
    size_t n = strlen(src);
    if (n == 0 || n >= SR_BARE_JID_MAX)
        return false;
    memcpy(dst, src, n + 1);
    return true;
}

bool sr_roster_from_xml(sr_roster_version *v, xmpp_stanza_t *el, const char **why)
{
    memset(v, 0, sizeof *v);
    const char *ver = xmpp_stanza_get_attribute(el, "version");
    *why = "bad room or signer";
    if (!copy_jid(v->room, xmpp_stanza_get_attribute(el, "room")) ||
        !copy_jid(v->signer, xmpp_stanza_get_attribute(el, "signer")))
        return false;
    *why = "bad version number";
    if (!ver || *ver < '0' || *ver > '9' || (ver[0] == '0' && ver[1]))
        return false;
    errno = 0;
    char *end;
    unsigned long long n = strtoull(ver, &end, 10);
    if (errno || *end)
        return false;
    v->version = n;
    *why = "bad prev or sig";
    const char *prev = xmpp_stanza_get_attribute(el, "prev");
    if (prev) {
        if (!sr_b64_decode_exact(v->prev, sizeof v->prev, prev))
            return false;
    } else if (v->version != 0) {
        return false;
    }
    if (!sr_b64_decode_exact(v->sig, sizeof v->sig, xmpp_stanza_get_attribute(el, "sig")))
        return false;

    for (xmpp_stanza_t *c = xmpp_stanza_get_children(el); c; c = xmpp_stanza_get_next(c)) {
        if (!xmpp_stanza_is_tag(c))
            continue;
        const char *name = xmpp_stanza_get_name(c);
        sr_op_kind kind;
        if (name && strcmp(name, "add") == 0)
            kind = SR_OP_ADD;
        else if (name && strcmp(name, "remove") == 0)
            kind = SR_OP_REMOVE;
        else if (name && strcmp(name, "role") == 0)
            kind = SR_OP_ROLE;
        else {
            *why = "unknown element in roster";
            return false;
        }
        if (v->nops == SR_ROSTER_MAX_OPS) {
            *why = "too many operations";
            return false;
        }
        sr_roster_op *op = &v->ops[v->nops++];
        op->kind = kind;
        *why = "bad operation JID";
        if (!copy_jid(op->jid, xmpp_stanza_get_attribute(c, "jid")))
            return false;
        if (kind != SR_OP_REMOVE) {
            op->role = sr_role_parse(xmpp_stanza_get_attribute(c, "role"));
            *why = "bad role";
            if (op->role == SR_ROLE_NONE)
                return false;
        }
        if (kind == SR_OP_ADD) {
            *why = "bad key";
            if (!sr_b64_decode_exact(op->key, sizeof op->key, xmpp_stanza_get_attribute(c, "key")))
                return false;
        }
    }
    *why = NULL;
    return true;
}
