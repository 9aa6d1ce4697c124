#!/bin/sh
# Checks xep/sealroom.xml: valid against the XSF DTD (as the XSF tooling
# reads it), every example well-formed XML, and the XML Schema section a
# well-formed schema that accepts the protocol elements it describes.
#
#   xep/validate.sh [XSF_DIR]    XSF_DIR holds xep.dtd and xep.ent
#                                (default: shared/xsf beside the checkout)
set -eu

HERE=$(cd "$(dirname "$0")" && pwd -P)
XSF=${1:-$HERE/../../shared/xsf}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

cp "$XSF/xep.dtd" "$XSF/xep.ent" "$TMP/"
cp "$HERE/sealroom.xml" "$TMP/doc.xml"
# xmllint prints nothing when the document is valid.
out=$(cd "$TMP" && xmllint --noout --noent --loaddtd --valid doc.xml 2>&1) || true
if [ -n "$out" ]; then
    printf '%s\n' "$out"
    echo "sealroom.xml: NOT valid against xep.dtd" >&2
    exit 1
fi
echo "sealroom.xml: valid against xep.dtd"

# Examples and the schema live in CDATA, which the DTD does not look into.
python3 - "$HERE/sealroom.xml" "$TMP" <<'EOF'
import re, sys, xml.dom.minidom as md
text = open(sys.argv[1], encoding='utf-8').read()
bad = 0
examples = re.findall(r"<example caption='([^']*)'><!\[CDATA\[(.*?)\]\]></example>", text, re.S)
for caption, body in examples:
    try:
        md.parseString('<r>' + body + '</r>')
    except Exception as e:
        bad += 1
        print('example "%s": %s' % (caption, e))
schema = re.search(r"<section1 topic='XML Schema'.*?<!\[CDATA\[\s*(.*?)\]\]>", text, re.S)
if not schema:
    print('no XML Schema section'); sys.exit(1)
open(sys.argv[2] + '/schema.xsd', 'w', encoding='utf-8').write(schema.group(1))
print('%d examples, %d not well-formed' % (len(examples), bad))
sys.exit(1 if bad else 0)
EOF

# The schema must compile and accept a roster version and an error condition.
cat >"$TMP/sample.xml" <<'EOF'
<chain xmlns='urn:xmpp:sealroom:0' head='0' complete='true'>
  <roster room='team@rooms.localhost' version='0'
          prev='AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='
          signer='alice@localhost'
          sig='iGpCdEoGEPuZkPohKIL/C8qmfWxaGG3kaaMoOZuwtk+EfHev5eofmKsBCPIuYh6Qw6V20CneQw9PVvBNLNgQBg=='>
    <add jid='alice@localhost' role='owner' key='iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w='/>
  </roster>
</chain>
EOF
printf "<stale-version xmlns='urn:xmpp:sealroom:0'/>\n" >"$TMP/sample2.xml"
xmllint --noout --schema "$TMP/schema.xsd" "$TMP/sample.xml" "$TMP/sample2.xml"
echo "schema: ok"
