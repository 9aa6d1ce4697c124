/* Test-only window into the secrets a sealroom_ctx holds, so integration
 * tests can prove the service never sees them (issue 3, "the server is
 * blind"), and a switch that makes a ctx stall in key distribution runs
 * (issue 4). Not exported from the shared library (hidden visibility); only a
 * program linking the static library can call it. Never call it from
 * production code: it hands out copies of secrets. */
#ifndef SEALROOM_TESTHOOK_H
#define SEALROOM_TESTHOOK_H

#include <sealroom/sealroom.h>

#include <stddef.h>

/* Called once per secret: what names it ("identity.root",
 * "identity.sign_sk", "identity.box_sk", "identity.dmkd_a",
 * "identity.dmkd_b", "vault.key", "epoch.secret", "epoch.k",
 * "epoch.keyring", "datakey.p", "search.kg"), room is the bare room JID or
 * NULL, epoch the epoch number (for "search.kg" the index generation) or 0.
 * The bytes are borrowed for the call. */
typedef void (*sr_testhook_secret_fn)(void *user, const char *what, const char *room,
                                      uint64_t epoch, const unsigned char *secret, size_t len);

/* Enumerate every secret ctx holds right now (its identity, the vault key,
 * every epoch secret and derived key of every room, every data key it has
 * made or unwrapped). */
void sr_testhook_secrets(const sealroom_ctx *ctx, sr_testhook_secret_fn fn, void *user);

/* Make ctx hang in key distribution runs: the round headlines of round
 * from_round (1..3) and later are ignored, as by a session that stopped
 * answering; 0 restores normal operation. The state of the run is kept. */
void sr_testhook_dmkd_stall(sealroom_ctx *ctx, int from_round);

#endif
