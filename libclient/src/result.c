/* Result codes and version information of libsealroom. */
#include "internal.h"

const char *sealroom_version(void)
{
    return SEALROOM_VERSION_STRING;
}

unsigned sealroom_version_number(void)
{
    return SEALROOM_VERSION_NUMBER;
}

const char *sealroom_strerror(int result)
{
    switch ((sealroom_result)result) {
    case SEALROOM_OK: return "success";
    case SEALROOM_E_INVALID: return "invalid argument";
    case SEALROOM_E_NOMEM: return "out of memory";
    case SEALROOM_E_STATE: return "operation not allowed in the current state";
    case SEALROOM_E_PROTOCOL: return "protocol violation by the peer";
    case SEALROOM_E_REMOTE: return "refused by the server";
    case SEALROOM_E_TIMEOUT: return "timed out";
    case SEALROOM_E_VERIFY: return "verification failed";
    case SEALROOM_E_NETWORK: return "network link lost or unavailable";
    case SEALROOM_E_NOT_FOUND: return "not found";
    case SEALROOM_E_FORBIDDEN: return "forbidden";
    case SEALROOM_E_CONFLICT: return "conflict";
    case SEALROOM_E_TOO_LARGE: return "too large";
    case SEALROOM_E_STALE: return "stale roster version";
    case SEALROOM_E_UNAVAILABLE: return "service unavailable";
    case SEALROOM_E_PASSPHRASE: return "wrong passphrase (or the stored vault was altered)";
    case SEALROOM_E_RATE_LIMITED: return "too many attempts; try again later";
    case SEALROOM_E_KEY_CHANGED: return "identity key differs from the pinned fingerprint";
    case SEALROOM_E_DECRYPT: return "decryption failed";
    case SEALROOM_E_REPLAY: return "replayed message";
    case SEALROOM_E_NO_KEY: return "no room key for this epoch";
    }
    return "unknown error";
}
