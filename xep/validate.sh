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
section = re.search(r"<section1 topic='XML Schema'.*?</section1>", text, re.S)
schemas = re.findall(r"<!\[CDATA\[\s*(.*?)\]\]>", section.group(0), re.S) if section else []
if len(schemas) < 2:
    print('the XML Schema section needs the urn:xmpp:sealroom:0 and :keys:0 schemas'); sys.exit(1)
open(sys.argv[2] + '/schema.xsd', 'w', encoding='utf-8').write(schemas[0])
open(sys.argv[2] + '/schema-keys.xsd', 'w', encoding='utf-8').write(schemas[1])
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
# The key-distribution schema: a round 2 headline's payload and the join marker.
cat >"$TMP/sample3.xml" <<'EOF'
<round2 xmlns='urn:xmpp:sealroom:keys:0' run='AAAAAAAAAAAAAAAAAAAAAA==' epoch='2'
        sid='AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=' n='2' position='1'>
  <left jid='bob@localhost' R='AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='
        c='AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=' sig='AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=='/>
  <right jid='bob@localhost' R='AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='
         c='AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=' sig='AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=='/>
  <representative jid='alice@localhost' R='AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='
                  c='AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=' sig='AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=='/>
</round2>
EOF
printf "<keys xmlns='urn:xmpp:sealroom:keys:0'/>\n" >"$TMP/sample4.xml"
xmllint --noout --schema "$TMP/schema-keys.xsd" "$TMP/sample3.xml" "$TMP/sample4.xml"
echo "schema: ok"
