/* Bare and full JID handling shared by sealroomd and libsealroom: split,
 * validate and normalise, so both ends compare JIDs the same way. */
#ifndef SEALROOM_PROTO_JID_H
#define SEALROOM_PROTO_JID_H

#include <stdbool.h>
#include <stddef.h>

#define SR_JID_MAX 3071 /* RFC 7622: each part at most 1023 bytes */

typedef struct sr_jid {
    char local[1024];    /* "" when absent */
    char domain[1024];
    char resource[1024]; /* "" when absent */
} sr_jid;

/* Parse `text` into parts. Local and domain are ASCII-lowercased; the
 * resource is kept as is. Returns false on empty domain, over-long parts,
 * control characters, or characters RFC 7622 forbids in a localpart. */
bool sr_jid_parse(sr_jid *out, const char *text);

/* Write "local@domain" (or "domain") into out. Returns false if it does not fit. */
bool sr_jid_bare(char *out, size_t outlen, const sr_jid *jid);

/* Parse `text` and write its normalised bare form; false if invalid. */
bool sr_jid_normalise_bare(char *out, size_t outlen, const char *text);

#endif
