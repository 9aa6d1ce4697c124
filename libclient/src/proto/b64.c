/* Strict base64 (see b64.h) on top of libsodium's constant-time codec, which
 * matters because keys and sealed payloads pass through it. */
#include "b64.h"

#include <sodium.h>
#include <string.h>

size_t sr_b64_encoded_len(size_t binlen)
{
    return sodium_base64_ENCODED_LEN(binlen, sodium_base64_VARIANT_ORIGINAL);
}

bool sr_b64_encode(char *out, size_t outlen, const unsigned char *in, size_t inlen)
{
    if (!out || (!in && inlen) || outlen < sr_b64_encoded_len(inlen))
        return false;
    sodium_bin2base64(out, outlen, in ? in : (const unsigned char *)"", inlen,
                      sodium_base64_VARIANT_ORIGINAL);
    return true;
}

size_t sr_b64_decoded_max(size_t inlen)
{
    return inlen / 4 * 3 + 3;
}

bool sr_b64_decode(unsigned char *out, size_t outmax, size_t *outlen, const char *in, size_t inlen)
{
    const char *end = NULL;
    size_t n = 0;
    if (!out || !outlen || (!in && inlen))
        return false;
    *outlen = 0;
    if (inlen == 0)
        return true;
    if (inlen % 4 != 0)
        return false;
    if (sodium_base642bin(out, outmax, in, inlen, NULL, &n, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        end != in + inlen)
        return false;
    *outlen = n;
    return true;
}

bool sr_b64_decode_exact(unsigned char *out, size_t n, const char *in)
{
    size_t got;
    if (!in)
        return false;
    size_t len = strlen(in);
    /* Decoding into an exact-size buffer fails cleanly on longer input. */
    return sr_b64_decode(out, n, &got, in, len) && got == n;
}
