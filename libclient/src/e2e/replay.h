/* Replay detection for receivers (issue 3: "receivers reject replays"):
 * remembers the last `capacity` (room, sender, message id) triples that
 * opened successfully, and refuses one seen before.
 *
 * Entry = KDF(K, SR_E2E_LABEL_REPLAY, lp16(room) ‖ lp16(sender) ‖ lp16(message id), 16)
 * with K 32 random bytes per structure, so nobody can aim hash collisions
 * at the table. Storage: a FIFO ring of entries plus a linear-probing
 * index, O(1) per check, memory about 24 bytes × capacity. When full the
 * oldest entry is forgotten: a replay older than the window passes this
 * check, so the wiring must also refuse messages older than the window by
 * other means (archive sequence numbers, the MAM position it has already
 * read past). One structure per room keeps a busy room from evicting a
 * quiet room's entries.
 *
 * Record only after a message verified and decrypted; otherwise a forgery
 * could burn the id of a genuine message before it arrives.
 *
 * Thread-safety: one thread at a time per structure. */
#ifndef SEALROOM_E2E_REPLAY_H
#define SEALROOM_E2E_REPLAY_H

#include "e2e/common.h"

#define SR_E2E_REPLAY_MAX_CAPACITY (1u << 24)

typedef struct sr_e2e_replay sr_e2e_replay;

/* capacity 1..SR_E2E_REPLAY_MAX_CAPACITY. Free with sr_e2e_replay_free.
 * Errors: INVALID, NOMEM. */
int sr_e2e_replay_new(sr_e2e_replay **out, size_t capacity);
void sr_e2e_replay_free(sr_e2e_replay *r);

/* OK if the triple is new (and now remembered), REPLAY if it was seen
 * within the window, INVALID for bad arguments. */
int sr_e2e_replay_check_add(sr_e2e_replay *r, const char *room, const char *sender,
                            const char *message_id);

/* OK if the triple is new (nothing recorded), REPLAY if seen. */
int sr_e2e_replay_seen(const sr_e2e_replay *r, const char *room, const char *sender,
                       const char *message_id);

#endif
