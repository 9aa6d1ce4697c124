/* Bounded replay window: FIFO ring of keyed digests with a linear-probing
 * index (replay.h). */
#include "e2e/replay.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define ENTRY_BYTES 16

struct sr_e2e_replay {
    unsigned char key[SR_E2E_KEY_BYTES];
    size_t capacity, count, head;       /* head: next ring slot to write */
    unsigned char (*ring)[ENTRY_BYTES];
    uint32_t *slots;                    /* ring index + 1; 0 = empty */
    size_t mask;
};

int sr_e2e_replay_new(sr_e2e_replay **out, size_t capacity)
{
    sr_e2e_replay *r = NULL;
    size_t nslots = 1;
    int rc = SR_E2E_ERR_INVALID;

    if (!out)
        return SR_E2E_ERR_INVALID;
    *out = NULL;
    if (capacity == 0 || capacity > SR_E2E_REPLAY_MAX_CAPACITY)
        goto out;
    if (sodium_init() < 0) {
        rc = SR_E2E_ERR_NOMEM;
        goto out;
    }
    /* Load factor at most 1/2 keeps probe chains short. */
    while (nslots < 2 * capacity)
        nslots <<= 1;
    rc = SR_E2E_ERR_NOMEM;
    r = calloc(1, sizeof *r);
    if (!r)
        goto out;
    r->ring = calloc(capacity, sizeof *r->ring);
    r->slots = calloc(nslots, sizeof *r->slots);
    if (!r->ring || !r->slots)
        goto out;
    randombytes_buf(r->key, sizeof r->key);
    r->capacity = capacity;
    r->mask = nslots - 1;
    *out = r;
    r = NULL;
    rc = SR_E2E_OK;
out:
    sr_e2e_replay_free(r);
    return rc;
}

void sr_e2e_replay_free(sr_e2e_replay *r)
{
    if (!r)
        return;
    sodium_memzero(r->key, sizeof r->key);
    free(r->ring);
    free(r->slots);
    free(r);
}

static int entry_of(unsigned char e[ENTRY_BYTES], const sr_e2e_replay *r, const char *room,
                    const char *sender, const char *message_id)
{
    unsigned char in[3 * 2 + 2 * SR_E2E_JID_MAX + SR_E2E_MSGID_MAX];
    sr_e2e_writer w;

    if (!r || !sr_e2e_str_ok(room, SR_E2E_JID_MAX) || !sr_e2e_str_ok(sender, SR_E2E_JID_MAX) ||
        !sr_e2e_str_ok(message_id, SR_E2E_MSGID_MAX))
        return SR_E2E_ERR_INVALID;
    sr_e2e_writer_init(&w, in, sizeof in);
    sr_e2e_put_lp16(&w, room);
    sr_e2e_put_lp16(&w, sender);
    sr_e2e_put_lp16(&w, message_id);
    if (w.overflow)
        return SR_E2E_ERR_INVALID;
    return sr_e2e_kdf(e, ENTRY_BYTES, r->key, SR_E2E_LABEL_REPLAY, in, w.len);
}

static size_t home_slot(const sr_e2e_replay *r, const unsigned char e[ENTRY_BYTES])
{
    uint64_t h = 0;
    for (int i = 0; i < 8; i++)
        h = h << 8 | e[i];
    return (size_t)h & r->mask;
}

/* Slot holding e, or the empty slot where it would go (*found false). */
static size_t probe(const sr_e2e_replay *r, const unsigned char e[ENTRY_BYTES], bool *found)
{
    size_t i = home_slot(r, e);

    *found = false;
    while (r->slots[i]) {
        if (memcmp(r->ring[r->slots[i] - 1], e, ENTRY_BYTES) == 0) {
            *found = true;
            return i;
        }
        i = (i + 1) & r->mask;
    }
    return i;
}

/* Removes slot i, shifting later members of its probe run back so that
 * lookups never stop early at the hole. */
static void slot_delete(sr_e2e_replay *r, size_t i)
{
    size_t j = i;

    for (;;) {
        j = (j + 1) & r->mask;
        if (!r->slots[j])
            break;
        size_t k = home_slot(r, r->ring[r->slots[j] - 1]);
        /* The entry at j may stay only if its home lies cyclically in (i, j]. */
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (stays)
            continue;
        r->slots[i] = r->slots[j];
        i = j;
    }
    r->slots[i] = 0;
}

int sr_e2e_replay_seen(const sr_e2e_replay *r, const char *room, const char *sender,
                       const char *message_id)
{
    unsigned char e[ENTRY_BYTES];
    bool found;
    int rc;

    if ((rc = entry_of(e, r, room, sender, message_id)) != SR_E2E_OK)
        return rc;
    probe(r, e, &found);
    return found ? SR_E2E_ERR_REPLAY : SR_E2E_OK;
}

int sr_e2e_replay_check_add(sr_e2e_replay *r, const char *room, const char *sender,
                            const char *message_id)
{
    unsigned char e[ENTRY_BYTES];
    bool found;
    size_t at;
    int rc;

    if ((rc = entry_of(e, r, room, sender, message_id)) != SR_E2E_OK)
        return rc;
    probe(r, e, &found);
    if (found)
        return SR_E2E_ERR_REPLAY;
    if (r->count == r->capacity) {
        at = probe(r, r->ring[r->head], &found);
        if (found)
            slot_delete(r, at);
        r->count--;
    }
    memcpy(r->ring[r->head], e, ENTRY_BYTES);
    at = probe(r, e, &found);
    r->slots[at] = (uint32_t)(r->head + 1);
    r->head = (r->head + 1) % r->capacity;
    r->count++;
    return SR_E2E_OK;
}
