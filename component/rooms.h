/* The room service: identities, room creation, the signed roster chain,
 * MUC-shaped presence, groupchat storage and reflection, MAM history and
 * disco. Receives every stanza from the link; all state lives in PostgreSQL
 * and is cached here per room. */
#ifndef SEALROOMD_ROOMS_H
#define SEALROOMD_ROOMS_H

#include <stdbool.h>
#include <strophe.h>

struct config;
struct db;
struct link;
typedef struct rooms rooms;

/* cfg, d and l are borrowed and must outlive the rooms object. cfg may be
 * swapped in place by a reload: read reloadable limits at use. */
rooms *rooms_new(const struct config *cfg, struct db *d, struct link *l);
void rooms_free(rooms *r);

/* Entry point for every stanza from the link. */
void rooms_handle_stanza(rooms *r, xmpp_stanza_t *stanza);
/* The link came up or went down. */
void rooms_link_state(rooms *r, bool up);
/* Periodic work (janitor): called at least every 100 ms, and as soon as
 * rooms_pollfd is readable. */
void rooms_tick(rooms *r, long now_ms);
/* Readable when finished searches wait for their answers; -1 if none. */
int rooms_pollfd(const rooms *r);
/* True while writes are still waiting for commit (graceful shutdown waits). */
bool rooms_busy(const rooms *r);

#endif
