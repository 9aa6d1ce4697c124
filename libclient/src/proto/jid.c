/* JID splitting and normalisation (RFC 7622 subset, see proto/jid.h): the one
 * place where sealroomd and libsealroom decide what "the same JID" means. */
#include "jid.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define PART_MAX 1023

/* Well-formed UTF-8 without overlongs or surrogates, so that bytewise
 * comparison after ASCII lowercasing is unambiguous. */
static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t len;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

/* Copies one part, refusing control characters everywhere and the space
 * where RFC 7622 forbids it (localpart, domainpart; resources may hold it,
 * as MUC nicknames often do). */
static bool copy_part(char *dst, const char *src, size_t n, bool lower, bool allow_space,
                      const char *forbidden)
{
    if (n > PART_MAX || !utf8_valid((const unsigned char *)src, n))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        if (c < 0x20 || c == 0x7f || (c == ' ' && !allow_space))
            return false;
        if (forbidden && c < 0x80 && strchr(forbidden, c))
            return false;
        dst[i] = (char)(lower && c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
    }
    dst[n] = '\0';
    return true;
}

bool sr_jid_parse(sr_jid *out, const char *text)
{
    if (!out || !text)
        return false;
    out->local[0] = out->domain[0] = out->resource[0] = '\0';

    /* RFC 7622 §3.1: the resource starts at the first '/', the localpart
     * ends at the first '@' before it. */
    const char *slash = strchr(text, '/');
    size_t bare_len = slash ? (size_t)(slash - text) : strlen(text);
    const char *at = memchr(text, '@', bare_len);
    const char *dom = at ? at + 1 : text;
    size_t dom_len = bare_len - (size_t)(dom - text);

    if (at) {
        size_t local_len = (size_t)(at - text);
        if (local_len == 0 || !copy_part(out->local, text, local_len, true, false, "\"&'/:<>@"))
            goto bad;
    }
    /* A trailing dot names the same domain (RFC 7622 §3.2). */
    if (dom_len > 0 && dom[dom_len - 1] == '.')
        dom_len--;
    if (dom_len == 0 || !copy_part(out->domain, dom, dom_len, true, false, "@/"))
        goto bad;
    if (slash) {
        size_t res_len = strlen(slash + 1);
        if (res_len == 0 || !copy_part(out->resource, slash + 1, res_len, false, true, NULL))
            goto bad;
    }
    return true;
bad:
    out->local[0] = out->domain[0] = out->resource[0] = '\0';
    return false;
}

bool sr_jid_bare(char *out, size_t outlen, const sr_jid *jid)
{
    if (!out || !jid || outlen == 0)
        return false;
    int n = jid->local[0] ? snprintf(out, outlen, "%s@%s", jid->local, jid->domain)
                          : snprintf(out, outlen, "%s", jid->domain);
    if (n < 0 || (size_t)n >= outlen) {
        out[0] = '\0';
        return false;
    }
    return true;
}

bool sr_jid_normalise_bare(char *out, size_t outlen, const char *text)
{
    sr_jid j;
    if (!sr_jid_parse(&j, text)) {
        if (out && outlen)
            out[0] = '\0';
        return false;
    }
    return sr_jid_bare(out, outlen, &j);
}
