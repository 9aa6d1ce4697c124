#!/bin/sh
# Checks that libsealroom.so exports only sealroom_* symbols (STYLE.md: one
# prefix for every exported symbol), and that it exports the core API.
set -eu
lib=${1:?usage: test_symbols.sh path/to/libsealroom.so}
syms=$(nm -D --defined-only "$lib" | awk 'NF >= 3 { print $3 }')
bad=$(printf '%s\n' "$syms" | grep -v '^sealroom_' || true)
if [ -n "$bad" ]; then
    echo "symbols exported without the sealroom_ prefix:" >&2
    printf '%s\n' "$bad" >&2
    exit 1
fi
for want in sealroom_version sealroom_strerror sealroom_ctx_new sealroom_ctx_receive_xml \
            sealroom_identity_generate sealroom_room_send sealroom_client_connect \
            sealroom_strophe_attach; do
    printf '%s\n' "$syms" | grep -qx "$want" || { echo "missing export: $want" >&2; exit 1; }
done
echo "ok: $(printf '%s\n' "$syms" | wc -l) symbols, all sealroom_*"
