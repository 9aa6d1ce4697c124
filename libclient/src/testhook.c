/* Test-only enumeration of the secrets a ctx holds (testhook.h): lets the
 * integration tests prove that none of them reaches the service; and the
 * switch that makes a ctx stop answering key distribution rounds. Hidden
 * from the shared library's exports like every internal symbol. */
#include "testhook.h"

#include "internal.h"
#include "search/keyring.h"
#include "sse.h"

void sr_testhook_secrets(const sealroom_ctx *ctx, sr_testhook_secret_fn fn, void *user)
{
    if (!ctx || !fn)
        return;
    if (ctx->identity) {
        const sr_e2e_identity *id = &ctx->identity->e2e;
        fn(user, "identity.root", NULL, 0, id->root, sizeof id->root);
        fn(user, "identity.sign_sk", NULL, 0, id->sign_sk, 32);
        fn(user, "identity.box_sk", NULL, 0, id->box_sk, sizeof id->box_sk);
        fn(user, "identity.dmkd_a", NULL, 0, id->dmkd_a, sizeof id->dmkd_a);
        fn(user, "identity.dmkd_b", NULL, 0, id->dmkd_b, sizeof id->dmkd_b);
    }
    if (ctx->vault_key)
        fn(user, "vault.key", NULL, 0, ctx->vault_key->key, sizeof ctx->vault_key->key);
    for (const sr_room *room = ctx->rooms; room; room = room->next) {
        for (const sr_epoch *e = room->epochs; e; e = e->next) {
            fn(user, "epoch.secret", room->jid, e->number, e->secret, sizeof e->secret);
            fn(user, "epoch.k", room->jid, e->number, e->keys.k, sizeof e->keys.k);
            fn(user, "epoch.keyring", room->jid, e->number, e->keys.keyring,
               sizeof e->keys.keyring);
        }
        for (const sr_datakey *d = room->dks; d; d = d->next)
            if (d->state == SR_DK_READY)
                fn(user, "datakey.p", room->jid, d->epoch, d->p, sizeof d->p);
        const sr_sse_keyring *kr = room->sse ? room->sse->keyring : NULL;
        for (size_t i = 0; kr && i < kr->n; i++)
            fn(user, "search.kg", room->jid, kr->gen[i], kr->key[i], 32);
    }
}

void sr_testhook_dmkd_stall(sealroom_ctx *ctx, int from_round)
{
    if (ctx)
        ctx->dmkd_stall = from_round;
}
