/* libFuzzer target for the component's parsers of untrusted input: any
 * bytes are parsed as a stanza and handed to the <roster/> and MAM query
 * parsers, and separately to the roster canonical-bytes decoder, base64 and
 * timestamp parsers. Crashes, leaks and UB are the failures looked for. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "service.h"
#include "stanza.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static xmpp_ctx_t *ctx;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ctx) {
        xmpp_initialize();
        ctx = xmpp_ctx_new(NULL, NULL);
    }
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    static sr_roster_version v;
    xmpp_stanza_t *s = xmpp_stanza_new_from_string(ctx, text);
    if (s) {
        xmpp_stanza_t *targets[2] = {s, xmpp_stanza_get_children(s)};
        for (int i = 0; i < 2; i++) {
            if (!targets[i] || !xmpp_stanza_is_tag(targets[i])) continue;
            (void)chain_parse_roster(targets[i], "team@rooms.localhost", &v);
            mam_query q;
            (void)archive_parse_mam(targets[i], 50, 250, &q);
        }
        xmpp_stanza_release(s);
    }
    (void)sr_roster_from_canonical(&v, data, size);
    unsigned char out[256];
    (void)st_b64_decode(out, sizeof out, text);
    long long ms;
    (void)st_parse_stamp(text, &ms);
    free(text);
    return 0;
}
