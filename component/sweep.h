/* The eager archive sweep (archive-wire "Eager sweep"): worker threads, each
 * with its own blocking PostgreSQL connection, re-key every data-key header
 * stored behind its room's current epoch for which the room's token chain
 * is complete, in batches walked in primary-key order and committed one by
 * one. An update only applies where the row still holds the epoch it was
 * read at, so a crash, a restart of PostgreSQL, a second instance or the
 * lazy path re-keying the same row never applies a token twice; after a
 * restart a scan at start finds the rooms still behind.
 *
 * The sweep also undoes revoked tokens (xep "Erasing tokens"). When a
 * member's check finds a room's chain wrong, the loop moves the tokens the
 * check headers do not prove from archive_tokens to archive_undo, in one
 * transaction (SWEEP_SQL_REVOKE_*), and kicks the room. Its sweep then
 * takes every header that went through a revoked step s (created_epoch ≤ s
 * < epoch) back to the first such s on its way: H_s = Δ(s→q)⁻¹·H_q with the
 * tokens it went through, the revoked ones as kept in archive_undo and the
 * others as still stored; every row again only where it still holds the
 * epoch it was read at. A revoked step is a gap for the re-keying, even
 * once a new token for it is stored, until the undo is over: the records
 * are deleted, by a statement that checks it, only when no header goes
 * through a revoked step any more. What keeps this right across crashes,
 * restarts and a second instance is in the statements themselves: a
 * re-keying batch applies only while every token it composed is stored
 * unchanged (locked FOR KEY SHARE, so the revocation waits for batches in
 * flight and no batch applies a revoked token after it), and an undoing
 * batch only while every record and token it inverted is.
 *
 * The workers never touch the event loop's db or XMPP objects: the loop
 * only tells them which rooms have news (sweep_kick), reads counters, and
 * takes the rooms whose sweep left nothing behind and have no undo pending
 * (sweep_take_done), whose tokens it may then erase (tokenerase.c).
 *
 * Thread-safety: sweep_kick, sweep_take_done and sweep_get_stats may be
 * called from any thread; sweep_start, sweep_stop and sweep_running from one
 * thread (the loop's). */
#ifndef SEALROOMD_SWEEP_H
#define SEALROOMD_SWEEP_H

#include <stdbool.h>
#include <stdint.h>

struct config;

/* The revocation, run by the loop in one transaction with $1 the room id
 * and $2 the revoked steps (from_epoch) as a bigint[] literal: keep each
 * revoked token for the undo, then drop it from the chain. A step already
 * kept (an undo still under way) keeps its first record, which is the
 * token its headers went through: no header moves through a revoked step
 * while that undo lasts, so a token stored for it meanwhile was never
 * applied and goes too. */
#define SWEEP_SQL_REVOKE_KEEP                                                                      \
    "INSERT INTO archive_undo (room_id, from_epoch, delta) SELECT room_id, from_epoch, delta "     \
    "FROM archive_tokens WHERE room_id = $1 AND from_epoch = ANY($2::bigint[]) "                   \
    "ON CONFLICT (room_id, from_epoch) DO NOTHING"
#define SWEEP_SQL_REVOKE_DROP                                                                      \
    "DELETE FROM archive_tokens WHERE room_id = $1 AND from_epoch = ANY($2::bigint[])"

typedef struct sweep sweep;

/* Start cfg->sweep_threads workers on cfg->db_conninfo, re-keying
 * cfg->sweep_batch headers per transaction. The values are copied: cfg may
 * go away. Connecting happens in the workers (they retry with back-off
 * while PostgreSQL is down), so start-up does not wait for it. Returns NULL
 * if memory or threads ran out. The new sweep becomes sweep_running(). */
sweep *sweep_start(const struct config *cfg);

/* Ask the workers to stop after the batch they are in (nothing half-done
 * is lost: an unfinished batch was never committed and is found again next
 * time), join them and free everything. NULL is a no-op. */
void sweep_stop(sweep *s);

/* Room room_id (rooms.room_id) may have headers to re-key or undo: a token
 * arrived, its epoch changed or tokens were revoked. Cheap and non-blocking
 * (a queue); kicks for a room already waiting are merged, and a kick for a
 * room being swept makes it swept again afterwards with what is stored
 * then. NULL s is a no-op. */
void sweep_kick(sweep *s, long long room_id);

/* A room whose sweep is over and left no header behind the epoch it swept
 * to, *epoch (its current epoch then), into *room_id; false when there is
 * none. Every completed sweep of such a room is reported, also one that
 * found nothing to do because the lazy path had moved every header, or
 * because there never was one; the scan at start sweeps every room whose
 * tokens reach its current epoch, so a restart reports them again. A sweep
 * that gave a slice up, or saw the epoch change under it, reports nothing
 * (the kick that comes with the next token sweeps it again); nor does one
 * of a room with an undo pending, looked up when the sweep ends, since the
 * headers it takes back will be behind. Reports are kept until taken, in
 * order, repeats included. NULL s: false. */
bool sweep_take_done(sweep *s, long long *room_id, uint64_t *epoch);

typedef struct sweep_stats {
    unsigned threads;                 /* worker threads */
    bool scan_done;                   /* the scan at start has listed its rooms */
    unsigned long long rooms_pending; /* rooms queued or being swept now */
    unsigned long long rooms_done;    /* room sweeps completed */
    unsigned long long headers_rekeyed;
    unsigned long long batches; /* transactions that re-keyed headers */
    /* Headers behind their room's current epoch in the rooms swept since
     * start, as last counted, less those re-keyed since. What is left when
     * no room is pending waits for a token (or cannot be re-keyed). */
    unsigned long long headers_behind;
    unsigned long long headers_undone; /* taken back through revoked tokens */
    unsigned long long undos_finished; /* rooms whose undo records were deleted, done */
    unsigned long long reconnects;     /* connections re-established after a loss */
    unsigned long long errors;         /* room slices given up on a database error */
} sweep_stats;

/* A consistent snapshot. NULL s gives all zeros. */
void sweep_get_stats(sweep *s, sweep_stats *out);

/* The sweep the daemon runs (the last one started and not stopped), or
 * NULL: how the room service and the admin command reach it. */
sweep *sweep_running(void);

#endif
