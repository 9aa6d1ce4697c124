/* Stanza helpers for the room service: element building, error replies and
 * strict base64/timestamp parsing (see stanza.h). */
#include "stanza.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

xmpp_stanza_t *st_add(xmpp_stanza_t *parent, const char *name, const char *ns)
{
    xmpp_stanza_t *child = xmpp_stanza_new(xmpp_stanza_get_context(parent));
    if (!child) return NULL;
    if (xmpp_stanza_set_name(child, name) != XMPP_EOK ||
        (ns && xmpp_stanza_set_ns(child, ns) != XMPP_EOK) ||
        xmpp_stanza_add_child_ex(parent, child, 0) != XMPP_EOK) {
        xmpp_stanza_release(child);
        return NULL;
    }
    return child;
}

xmpp_stanza_t *st_add_text(xmpp_stanza_t *parent, const char *name, const char *ns,
                           const char *text)
{
    xmpp_stanza_t *el = st_add(parent, name, ns);
    if (!el) return NULL;
    xmpp_stanza_t *t = xmpp_stanza_new(xmpp_stanza_get_context(parent));
    if (!t) return NULL;
    if (xmpp_stanza_set_text(t, text) != XMPP_EOK || xmpp_stanza_add_child_ex(el, t, 0) != XMPP_EOK) {
        xmpp_stanza_release(t);
        return NULL;
    }
    return el;
}

xmpp_stanza_t *st_new(xmpp_ctx_t *ctx, const char *name, const char *type, const char *from,
                      const char *to, const char *id)
{
    xmpp_stanza_t *s = xmpp_stanza_new(ctx);
    if (!s) return NULL;
    xmpp_stanza_set_name(s, name);
    if (type) xmpp_stanza_set_type(s, type);
    if (from) xmpp_stanza_set_from(s, from);
    if (to) xmpp_stanza_set_to(s, to);
    if (id) xmpp_stanza_set_id(s, id);
    return s;
}

xmpp_stanza_t *st_child(xmpp_stanza_t *parent, const char *name, const char *ns)
{
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(parent); c; c = xmpp_stanza_get_next(c)) {
        if (!xmpp_stanza_is_tag(c)) continue;
        const char *n = xmpp_stanza_get_name(c);
        if (!n || strcmp(n, name) != 0) continue;
        if (ns) {
            const char *cns = xmpp_stanza_get_ns(c);
            if (!cns || strcmp(cns, ns) != 0) continue;
        }
        return c;
    }
    return NULL;
}

const char *st_text(xmpp_stanza_t *el)
{
    xmpp_stanza_t *c = xmpp_stanza_get_children(el);
    if (c && xmpp_stanza_is_text(c) && !xmpp_stanza_get_next(c)) {
        const char *t = xmpp_stanza_get_text_ptr(c);
        return t ? t : "";
    }
    return "";
}

xmpp_stanza_t *st_error(xmpp_stanza_t *req, const char *from, const char *etype,
                        const char *condition, const char *app_condition, const char *text)
{
    xmpp_ctx_t *ctx = xmpp_stanza_get_context(req);
    const char *name = xmpp_stanza_get_name(req);
    xmpp_stanza_t *err = st_new(ctx, name ? name : "message", "error", from,
                                xmpp_stanza_get_from(req), xmpp_stanza_get_id(req));
    if (!err) return NULL;
    xmpp_stanza_t *e = st_add(err, "error", NULL);
    if (!e) goto fail;
    xmpp_stanza_set_attribute(e, "type", etype);
    if (!st_add(e, condition, NS_STANZAS)) goto fail;
    if (text) {
        xmpp_stanza_t *t = st_add_text(e, "text", NS_STANZAS, text);
        if (!t) goto fail;
        xmpp_stanza_set_attribute(t, "xml:lang", "en");
    }
    if (app_condition && !st_add(e, app_condition, NS_SEALROOM)) goto fail;
    return err;
fail:
    xmpp_stanza_release(err);
    return NULL;
}

xmpp_stanza_t *st_iq_result(xmpp_stanza_t *req, const char *from)
{
    return st_new(xmpp_stanza_get_context(req), "iq", "result", from, xmpp_stanza_get_from(req),
                  xmpp_stanza_get_id(req));
}

long st_b64_decode(unsigned char *out, size_t maxlen, const char *in)
{
    size_t inlen = strlen(in), binlen = 0;
    const char *end = NULL;
    /* Padded base64 is always a multiple of 4; checking first keeps libsodium
     * from accepting truncated input that happens to decode. */
    if (inlen % 4 != 0) return -1;
    if (inlen / 4 * 3 > maxlen + 2) return -1;
    if (sodium_base642bin(out, maxlen, in, inlen, NULL, &binlen, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0)
        return -1;
    if (end != in + inlen) return -1;
    return (long)binlen;
}

bool st_b64_decode_exact(unsigned char *out, size_t n, const char *in)
{
    if (!in) return false;
    return st_b64_decode(out, n, in) == (long)n;
}

char *st_b64_encode(const unsigned char *in, size_t len)
{
    size_t outlen = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
    char *out = malloc(outlen);
    if (!out) return NULL;
    sodium_bin2base64(out, outlen, in, len, sodium_base64_VARIANT_ORIGINAL);
    return out;
}

void st_format_stamp(char out[32], long long unix_ms)
{
    time_t secs = (time_t)(unix_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    /* The modulos bound every field's width, so the result always fits in 32
     * bytes (and GCC can prove it; -Wformat-truncation is an error here). */
    snprintf(out, 32, "%04u-%02u-%02uT%02u:%02u:%02u.%03uZ", (unsigned)(tm.tm_year + 1900) % 10000u,
             (unsigned)(tm.tm_mon + 1) % 100u, (unsigned)tm.tm_mday % 100u,
             (unsigned)tm.tm_hour % 100u, (unsigned)tm.tm_min % 100u, (unsigned)tm.tm_sec % 100u,
             (unsigned)(unix_ms % 1000) % 1000u);
}

static bool digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

bool st_parse_stamp(const char *in, long long *unix_ms)
{
    int y, mo, d, h, mi, s, ms = 0;
    if (!in || strlen(in) < 20) return false;
    if (!digits(in, 4, &y) || in[4] != '-' || !digits(in + 5, 2, &mo) || in[7] != '-' ||
        !digits(in + 8, 2, &d) || in[10] != 'T' || !digits(in + 11, 2, &h) || in[13] != ':' ||
        !digits(in + 14, 2, &mi) || in[16] != ':' || !digits(in + 17, 2, &s))
        return false;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60) return false;
    const char *p = in + 19;
    if (*p == '.') {
        p++;
        int n = 0, frac = 0;
        while (p[n] >= '0' && p[n] <= '9') {
            if (n < 3) frac = frac * 10 + (p[n] - '0');
            n++;
        }
        if (n == 0) return false;
        for (int k = n; k < 3; k++) frac *= 10;
        ms = frac;
        p += n;
    }
    long long offset_min = 0;
    if (*p == 'Z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (!digits(p + 1, 2, &oh) || p[3] != ':' || !digits(p + 4, 2, &om) || oh > 23 || om > 59)
            return false;
        offset_min = (oh * 60 + om) * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return false;
    }
    if (*p) return false;
    /* Days from civil (Howard Hinnant's algorithm): no timegm() in C11. */
    int yy = y - (mo <= 2);
    long long era = (yy >= 0 ? yy : yy - 399) / 400;
    long long yoe = yy - era * 400;
    long long doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    long long days = era * 146097 + doe - 719468;
    long long secs = days * 86400 + h * 3600 + mi * 60 + s - offset_min * 60;
    *unix_ms = secs * 1000 + ms;
    return true;
}
