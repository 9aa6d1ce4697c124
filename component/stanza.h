/* Small helpers over libstrophe's stanza API for the room service: building
 * child elements, error replies with an application condition and text, and
 * base64 in and out. Kept apart so the request parsers stay readable and can
 * be fuzzed on their own. */
#ifndef SEALROOMD_STANZA_H
#define SEALROOMD_STANZA_H

#include <stdbool.h>
#include <stddef.h>
#include <strophe.h>

#define NS_SEALROOM "urn:xmpp:sealroom:0"
#define NS_MUC "http://jabber.org/protocol/muc"
#define NS_MUC_USER "http://jabber.org/protocol/muc#user"
#define NS_MAM "urn:xmpp:mam:2"
#define NS_RSM "http://jabber.org/protocol/rsm"
#define NS_FORWARD "urn:xmpp:forward:0"
#define NS_DELAY "urn:xmpp:delay"
#define NS_SID "urn:xmpp:sid:0"
#define NS_DATA "jabber:x:data"
#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"
#define NS_PING "urn:xmpp:ping"
#define NS_COMMANDS "http://jabber.org/protocol/commands"
#define NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"

/* The text non-Sealroom clients display instead of the sealed payload. */
#define SEALROOM_FALLBACK_BODY                                                                     \
    "[This message is encrypted with Sealroom (urn:xmpp:sealroom:0); your client cannot "          \
    "display it.]"

/* New element <name xmlns=ns/> (ns may be NULL) appended to parent; returns
 * the child (owned by parent) or NULL on allocation failure. */
xmpp_stanza_t *st_add(xmpp_stanza_t *parent, const char *name, const char *ns);
/* Same with a text child. */
xmpp_stanza_t *st_add_text(xmpp_stanza_t *parent, const char *name, const char *ns,
                           const char *text);
/* A new top-level stanza (caller releases). */
xmpp_stanza_t *st_new(xmpp_ctx_t *ctx, const char *name, const char *type, const char *from,
                      const char *to, const char *id);

/* Child by name and namespace (NULL ns: any). */
xmpp_stanza_t *st_child(xmpp_stanza_t *parent, const char *name, const char *ns);
/* Text content without allocation: "" when empty. Caller must not free. */
const char *st_text(xmpp_stanza_t *el);

/* Build the error reply for `req` (iq, message or presence): swaps to/from,
 * keeps id, type='error', <error type=etype><condition/><text/>[<app xmlns=NS/>]</error>.
 * For presence and message errors the original payload is not echoed. */
xmpp_stanza_t *st_error(xmpp_stanza_t *req, const char *from, const char *etype,
                        const char *condition, const char *app_condition, const char *text);

/* An empty iq result to req from `from`. */
xmpp_stanza_t *st_iq_result(xmpp_stanza_t *req, const char *from);

/* Strict base64 (RFC 4648 §4, padded, no whitespace). Returns decoded length
 * or -1 on bad input or if it would exceed maxlen. */
long st_b64_decode(unsigned char *out, size_t maxlen, const char *in);
/* Caller frees with free(); NULL on allocation failure. */
char *st_b64_encode(const unsigned char *in, size_t len);
/* Decode exactly n bytes; false otherwise. */
bool st_b64_decode_exact(unsigned char *out, size_t n, const char *in);

/* Format unix milliseconds as XEP-0082 "YYYY-MM-DDTHH:MM:SS.mmmZ". */
void st_format_stamp(char out[32], long long unix_ms);
/* Parse an XEP-0082 date-time (with Z or ±HH:MM) into unix ms. */
bool st_parse_stamp(const char *in, long long *unix_ms);

#endif
