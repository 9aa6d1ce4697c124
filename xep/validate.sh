#!/bin/sh
# Checks xep/sealroom.xml: valid against the XSF DTD (as the XSF tooling
# reads it), every example well-formed XML, and the XML Schema section a
# set of well-formed schemas that accept the protocol elements they
# describe: fixed samples for each namespace, and every element of
# urn:xmpp:sealroom:archive:0 and :search:0 in the examples of the
# archive re-encryption and encrypted search sections (with the
# urn:xmpp:sealroom:0 error conditions of those examples).
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
# The schemas are written out in the order of the XML Schema section
# (sealroom:0, keys:0, archive:0, search:0), and the protocol elements of
# the archive and search examples each into a file of its own under
# $TMP/ex-<namespace>/, for xmllint below.
python3 - "$HERE/sealroom.xml" "$TMP" <<'EOF'
import os, re, sys, xml.dom.minidom as md, xml.etree.ElementTree as ET
text = open(sys.argv[1], encoding='utf-8').read()
tmp = sys.argv[2]
bad = 0
example_re = re.compile(r"<example caption='([^']*)'><!\[CDATA\[(.*?)\]\]></example>", re.S)
examples = example_re.findall(text)
for caption, body in examples:
    try:
        md.parseString('<r>' + body + '</r>')
    except Exception as e:
        bad += 1
        print('example "%s": %s' % (caption, e))
section = re.search(r"<section1 topic='XML Schema'.*?</section1>", text, re.S)
schemas = re.findall(r"<!\[CDATA\[\s*(.*?)\]\]>", section.group(0), re.S) if section else []
names = ['schema.xsd', 'schema-keys.xsd', 'schema-archive.xsd', 'schema-search.xsd']
targets = ['urn:xmpp:sealroom:0', 'urn:xmpp:sealroom:keys:0', 'urn:xmpp:sealroom:archive:0',
           'urn:xmpp:sealroom:search:0']
if len(schemas) != len(names):
    print('the XML Schema section needs %d schemas (%s), has %d'
          % (len(names), ', '.join(targets), len(schemas)))
    sys.exit(1)
for name, target, schema in zip(names, targets, schemas):
    if "targetNamespace='%s'" % target not in schema:
        print('schema %d of the XML Schema section is not the one of %s' % (names.index(name) + 1, target))
        sys.exit(1)
    open(os.path.join(tmp, name), 'w', encoding='utf-8').write(schema)

# Every element of the section's namespace whose parent is not of it, and
# every urn:xmpp:sealroom:0 condition in an <error/>, in each example.
STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas'
def extract(anchor, ns):
    sec = re.search(r"<section1 topic='[^']*' anchor='%s'>.*?</section1>" % anchor, text, re.S)
    if not sec:
        print('no section %s' % anchor)
        sys.exit(1)
    found = {ns: 0, 'urn:xmpp:sealroom:0': 0}
    for caption, body in example_re.findall(sec.group(0)):
        root = ET.fromstring('<r>' + body + '</r>')
        parents = {c: p for p in root.iter() for c in p}
        for el in root.iter():
            tag_ns = el.tag[1:].split('}')[0] if el.tag.startswith('{') else ''
            parent = parents.get(el)
            parent_ns = parent.tag[1:].split('}')[0] if parent is not None and parent.tag.startswith('{') else ''
            if tag_ns == ns and parent_ns != ns:
                kind = ns
            elif tag_ns == 'urn:xmpp:sealroom:0' and parent is not None and parent.tag == 'error':
                kind = 'urn:xmpp:sealroom:0'
            else:
                continue
            d = os.path.join(tmp, 'ex-' + kind.rsplit(':', 2)[-2])
            os.makedirs(d, exist_ok=True)
            found[kind] += 1
            path = os.path.join(d, '%s-%03d.xml' % (anchor, found[kind]))
            el.tail = None
            open(path, 'wb').write(ET.tostring(el, encoding='utf-8'))
    return found[ns]
n_archive = extract('archive', 'urn:xmpp:sealroom:archive:0')
n_search = extract('search', 'urn:xmpp:sealroom:search:0')
print('%d examples, %d not well-formed; %d archive and %d search elements in examples'
      % (len(examples), bad, n_archive, n_search))
if n_archive == 0 or n_search == 0:
    print('no protocol elements found in the archive or search examples')
    sys.exit(1)
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
# The archive and search schemas: every protocol element of their sections'
# examples, and the error conditions there against the urn:xmpp:sealroom:0
# schema. xmllint exits non-zero if any file does not validate.
xmllint --noout --schema "$TMP/schema-archive.xsd" "$TMP"/ex-archive/*.xml
xmllint --noout --schema "$TMP/schema-search.xsd" "$TMP"/ex-search/*.xml
xmllint --noout --schema "$TMP/schema.xsd" "$TMP"/ex-sealroom/*.xml
# A search element the examples do not show: a page request with 'before'.
cat >"$TMP/sample5.xml" <<'EOF'
<search xmlns='urn:xmpp:sealroom:search:0' hi='1' max='200' before='42'>
  <keyword><cover gen='1'>IAAAAAEaNIDOve20upYRB0IGmld+MVtbl432/xL1oj0V+9gSOA==</cover></keyword>
</search>
EOF
printf "<compact xmlns='urn:xmpp:sealroom:search:0'/>\n" >"$TMP/sample6.xml"
xmllint --noout --schema "$TMP/schema-search.xsd" "$TMP/sample5.xml" "$TMP/sample6.xml"
echo "schema: ok"
