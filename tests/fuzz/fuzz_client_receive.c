/* libFuzzer target for libsealroom's receive path: any bytes are fed to
 * sealroom_ctx_receive_xml of a core that has requests of every kind in
 * flight (so answers to them are matched and parsed), a joined room and an
 * outbox. The library must never crash, leak or hit UB on what a server or
 * another client sends. */
#include <sealroom/sealroom.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int drop_xml(void *user, const char *xml, size_t len)
{
    (void)user;
    (void)xml;
    (void)len;
    return 0;
}

static sealroom_identity *id;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!id && sealroom_identity_generate(&id) != SEALROOM_OK) return 0;
    sealroom_callbacks cb = {.struct_size = sizeof cb, .send_xml = drop_xml};
    sealroom_ctx *ctx = NULL;
    if (sealroom_ctx_new(&ctx, "alice@localhost/fuzz", "rooms.localhost", &cb) != SEALROOM_OK)
        return 0;
    uint32_t req;
    const unsigned char pk[32] = {1};
    /* Requests whose answers the input may try to forge; ids are sr-1.. in order. */
    if (sealroom_ctx_set_identity(ctx, id) == SEALROOM_OK) {
        (void)sealroom_identity_register(ctx, &req);
        (void)sealroom_identity_fetch(ctx, &req, "bob@localhost");
        (void)sealroom_room_create(ctx, &req, "team");
        (void)sealroom_room_sync(ctx, &req, "team");
        (void)sealroom_room_add_member(ctx, &req, "team", "bob@localhost", SEALROOM_ROLE_MEMBER, pk);
        (void)sealroom_room_join(ctx, &req, "team", "alice");
        (void)sealroom_room_history(ctx, &req, "team", NULL, 10);
    }
    /* Several stanzas may be packed into one input, separated by NUL. */
    size_t start = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i == size || data[i] == 0) {
            if (i > start) (void)sealroom_ctx_receive_xml(ctx, (const char *)data + start, i - start);
            start = i + 1;
        }
    }
    const unsigned char payload[4] = {1, 2, 3, 4};
    (void)sealroom_room_send(ctx, &req, NULL, 0, "team", payload, sizeof payload);
    sealroom_ctx_tick(ctx, 1000000);
    sealroom_ctx_free(ctx);
    return 0;
}
