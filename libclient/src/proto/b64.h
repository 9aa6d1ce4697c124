/* Strict base64 for the wire format (xep/sealroom.xml: RFC 4648 §4, padded, no
 * whitespace), shared by sealroomd and libsealroom so both accept exactly
 * the same encodings. */
#ifndef SEALROOM_PROTO_B64_H
#define SEALROOM_PROTO_B64_H

#include <stdbool.h>
#include <stddef.h>

/* Characters needed to encode binlen bytes, including the final NUL. */
size_t sr_b64_encoded_len(size_t binlen);

/* Encode in[0..inlen) into out (NUL-terminated). False if outlen is too small. */
bool sr_b64_encode(char *out, size_t outlen, const unsigned char *in, size_t inlen);

/* Upper bound of the decoded size of inlen base64 characters. */
size_t sr_b64_decoded_max(size_t inlen);

/* Decode all of in[0..inlen) into out (at most outmax bytes), setting
 * *outlen. False on any character outside the alphabet, missing or wrong
 * padding, trailing data, or if the result does not fit. */
bool sr_b64_decode(unsigned char *out, size_t outmax, size_t *outlen, const char *in, size_t inlen);

/* Decode the NUL-terminated in, which must decode to exactly n bytes. */
bool sr_b64_decode_exact(unsigned char *out, size_t n, const char *in);

#endif
