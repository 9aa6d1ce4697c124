#!/usr/bin/env bash
# `cmake --install` into a scratch prefix, then build a program against the
# installed libsealroom twice: through pkg-config with the shared library,
# and against libsealroom.a alone. Proves the headers, the relocatable
# pkg-config file, the SONAME and a self-contained static archive.
set -euo pipefail
build=$1
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
cat >"$prefix/t.c" <<'C'
#include <sealroom/sealroom.h>
#include <stdio.h>
#include <string.h>
int main(void)
{
    sealroom_identity *id = NULL;
    if (sealroom_identity_generate(&id) != SEALROOM_OK) return 1;
    sealroom_identity_free(id);
    printf("%s\n", sealroom_version());
    return strcmp(sealroom_version(), SEALROOM_VERSION_STRING) != 0;
}
C
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig:$prefix/lib/x86_64-linux-gnu/pkgconfig
# shellcheck disable=SC2046
cc -std=c11 -Wall -Werror "$prefix/t.c" -o "$prefix/t-shared" $(pkg-config --cflags --libs sealroom) \
    -Wl,-rpath,"$(pkg-config --variable=libdir sealroom)"
"$prefix/t-shared"
readelf -d "$(pkg-config --variable=libdir sealroom)/libsealroom.so" | grep -q 'SONAME.*libsealroom.so.0'
# shellcheck disable=SC2046
cc -std=c11 -Wall -Werror "$prefix/t.c" -o "$prefix/t-static" $(pkg-config --cflags sealroom) \
    "$(pkg-config --variable=libdir sealroom)/libsealroom.a" $(pkg-config --libs libstrophe libsodium)
"$prefix/t-static"
echo "install check: ok"
