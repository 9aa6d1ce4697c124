#!/usr/bin/python3
"""Independent check of the encrypted-search test vectors and normalisation
table in tests/unit/test_search.c (spec: /work/notes/search-wire.md §1-2).

Uses hashlib.blake2b (KDF, GGM tree, labels), the 'cryptography' package's
ChaCha20-Poly1305 with a pure-Python HChaCha20 (XChaCha20-Poly1305 posting
blocks, keyring blob), and unicodedata for NFKC + case folding, with the
tokenisation rules re-implemented here. Nothing from libsealroom is used.

Normalisation: utf8proc (the C side) folds case while decomposing and then
composes; here that is NFKC(casefold(NFKD(text))) after dropping
default-ignorable code points. The two agree on the table's strings, which
is what this checks; Python's Unicode version may lag utf8proc's, so the
table keeps to long-assigned characters."""
import hashlib, os, re, struct, sys, unicodedata
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_search.c")
src = open(SRC, encoding="utf-8").read()

def vec(name):
    m = re.search(r'expect_hex\("%s",[^;]*?\);' % re.escape(name), src, re.S)
    if not m:
        raise SystemExit("no vector %s in test_search.c" % name)
    return "".join(re.findall(r'"([0-9a-f]{2,})"', m.group(0)))

fails = 0
def result(ok, name, detail=""):
    global fails
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else detail))
    fails += not ok
def check(name, got_hex):
    want = vec(name)
    result(want == got_hex, name, "\n  py   %s\n  test %s" % (got_hex, want))

def fill(n, start): return bytes((start + i) & 0xff for i in range(n))
def lp8(s): return bytes([len(s)]) + s
def lp16(s): return struct.pack(">H", len(s)) + s
def u32(v): return struct.pack(">I", v)
def u64(v): return struct.pack(">Q", v)
def kdf(key, label, data, n): return hashlib.blake2b(lp8(label) + data, digest_size=n, key=key).digest()

# ---- XChaCha20-Poly1305 (as in e2e_vectors_check.py) ---------------------
def rotl(v, n): return ((v << n) | (v >> (32 - n))) & 0xffffffff
def hchacha20(key, n16):
    st = list(struct.unpack("<4I", b"expand 32-byte k")) + list(struct.unpack("<8I", key)) + list(struct.unpack("<4I", n16))
    def qr(a, b, c, d):
        st[a] = (st[a] + st[b]) & 0xffffffff; st[d] = rotl(st[d] ^ st[a], 16)
        st[c] = (st[c] + st[d]) & 0xffffffff; st[b] = rotl(st[b] ^ st[c], 12)
        st[a] = (st[a] + st[b]) & 0xffffffff; st[d] = rotl(st[d] ^ st[a], 8)
        st[c] = (st[c] + st[d]) & 0xffffffff; st[b] = rotl(st[b] ^ st[c], 7)
    for _ in range(10):
        qr(0, 4, 8, 12); qr(1, 5, 9, 13); qr(2, 6, 10, 14); qr(3, 7, 11, 15)
        qr(0, 5, 10, 15); qr(1, 6, 11, 12); qr(2, 7, 8, 13); qr(3, 4, 9, 14)
    return struct.pack("<8I", *(st[0:4] + st[12:16]))
# draft-irtf-cfrg-xchacha §2.2.1 HChaCha20 vector
assert hchacha20(bytes(range(32)), bytes.fromhex("000000090000004a0000000031415927")).hex() == \
    "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc"
def xchacha_encrypt(key, nonce, pt, ad):
    return ChaCha20Poly1305(hchacha20(key, nonce[:16])).encrypt(b"\0" * 4 + nonce[16:], pt, ad)

# ---- §2 derivations ---------------------------------------------------------
def root(kg, g, w): return kdf(kg, b"sealroom.sse.v1.root", bytes([1]) + u32(g) + bytes([len(w)]) + w, 32)
def child(n, bit): return kdf(n, b"sealroom.sse.v1.ggm.right" if bit else b"sealroom.sse.v1.ggm.left", b"", 32)
def node(r, depth, prefix):
    for i in range(depth):
        r = child(r, (prefix >> (depth - 1 - i)) & 1)
    return r
def leaf(r, b): return node(r, 32, b)
def cover(lo, hi, depth=0, prefix=0):
    """Top-down: a node inside [lo, hi] is taken whole, a disjoint one dropped."""
    a, b = prefix << (32 - depth), ((prefix + 1) << (32 - depth)) - 1
    if b < lo or a > hi: return []
    if lo <= a and b <= hi: return [(depth, prefix)]
    return cover(lo, hi, depth + 1, 2 * prefix) + cover(lo, hi, depth + 1, 2 * prefix + 1)
def label(t, c): return kdf(t, b"sealroom.sse.v1.label", u32(c), 16)
def segment_key(t, s): return kdf(t, b"sealroom.sse.v1.segment", u64(s), 32)
def block_label(s, i): return kdf(s, b"sealroom.sse.v1.block-label", u32(i), 16)
def block_body(s, seg, i, seqs):
    assert len(seqs) <= 32 and all(x > y for x, y in zip(seqs, seqs[1:]))
    pt = struct.pack(">H", len(seqs)) + b"".join(u64(x) for x in seqs)
    pt += b"\0" * (2 + 8 * 32 - len(pt))
    bk = kdf(s, b"sealroom.sse.v1.block-key", b"", 32)
    return xchacha_encrypt(bk, b"\0" * 20 + u32(i), pt, u64(seg) + u32(i))

KG = fill(32, 0x40)
R = root(KG, 1, b"tokyo")
T = leaf(R, 5)
S = segment_key(T, 7)
check("sse.root", R.hex())
check("sse.root_gen2_cjk", root(KG, 2, "東京".encode()).hex())
check("sse.left", child(R, 0).hex())
check("sse.right", child(R, 1).hex())
check("sse.leaf", T.hex())
check("sse.leaf_max", leaf(R, 0xffffffff).hex())
check("sse.label", label(T, 3).hex())
check("sse.segment_key", S.hex())
check("sse.block_label", block_label(S, 1).hex())
check("sse.block_body", block_body(S, 7, 1, [300, 200, 100]).hex())
check("sse.block_body_empty", block_body(S, 7, 2, []).hex())
check("sse.cover_5_12", b"".join(bytes([d]) + u32(p) + node(R, d, p) for d, p in cover(5, 12)).hex())

# ---- §1 normalisation ---------------------------------------------------------
# Default_Ignorable_Code_Point (DerivedCoreProperties.txt), what UTF8PROC_IGNORE drops.
IGNORABLE = [(0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160),
             (0x17B4, 0x17B5), (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E),
             (0x2060, 0x206F), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF),
             (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
             (0xE0000, 0xE0FFF)]
CJK = [(0x1100, 0x11FF), (0x2E80, 0x2FFF), (0x3040, 0x30FF), (0x3130, 0x318F), (0x31F0, 0x31FF),
       (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xA960, 0xA97F), (0xAC00, 0xD7FF), (0xF900, 0xFAFF),
       (0xFF66, 0xFF9F), (0x20000, 0x3FFFF)]
def within(ch, ranges): return any(lo <= ord(ch) <= hi for lo, hi in ranges)
def is_word(ch): return unicodedata.category(ch)[0] in "LMN"

def keywords(raw, cap=1024):
    """The keyword list, or None for invalid UTF-8."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = "".join(ch for ch in text if not within(ch, IGNORABLE))
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKD", text).casefold())
    runs, i = [], 0
    while i < len(text):
        if not is_word(text[i]):
            i += 1
            continue
        cjk, j = within(text[i], CJK), i + 1
        while j < len(text) and is_word(text[j]) and within(text[j], CJK) == cjk:
            j += 1
        run = text[i:j]
        runs += [run] if not cjk or len(run) == 1 else [run[k:k + 2] for k in range(len(run) - 1)]
        i = j
    out = []
    for w in runs:
        b = b""
        for ch in w:
            e = ch.encode("utf-8")
            if len(b) + len(e) > 64: break
            b += e
        if b not in out:
            out.append(b)
        if len(out) == cap: break
    return out

def c_string(body):
    """Bytes of a C string literal's contents (the escapes the table uses)."""
    out, i = bytearray(), 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode("utf-8"); i += 1
        elif body[i + 1] == "x":
            j = i + 2
            while j < len(body) and body[j] in "0123456789abcdefABCDEF": j += 1
            out.append(int(body[i + 2:j], 16)); i = j
        elif body[i + 1] in "uU":
            n = 4 if body[i + 1] == "u" else 8
            out += chr(int(body[i + 2:i + 2 + n], 16)).encode("utf-8"); i += 2 + n
        elif body[i + 1] in "\\\"'":
            out.append(ord(body[i + 1])); i += 2
        else:
            raise SystemExit("unsupported escape in %r" % body)
    return bytes(out)

table = re.search(r"/\* NORM_CASES_BEGIN \*/(.*?)/\* NORM_CASES_END \*/", src, re.S).group(1)
ncases = 0
for line in table.splitlines():
    lits = re.findall(r'"((?:[^"\\]|\\.)*)"', line)
    if not lits: continue
    assert len(lits) == 3, line
    name, text, want = lits[0], c_string(lits[1]), c_string(lits[2])
    got = keywords(text)
    got = b"!" if got is None else b"|".join(got)
    result(got == want, "norm." + name, "\n  py   %r\n  test %r" % (got.decode(), want.decode()))
    ncases += 1
result(ncases >= 25, "norm: the table has its %d cases" % ncases)
# The CJK bigrams, spelled out once more by hand.
result(keywords("東京都に行きました".encode()) ==
       [x.encode() for x in ["東京", "京都", "都に", "に行", "行き", "きま", "まし", "した"]],
       "norm: japanese bigrams")

# ---- a whole segment: docs {10: "alpha beta", 11: "Beta"}, last batch 5 (the
# batch whose token keys it), segment 7; blocks label ‖ body sorted by label ---
docs = {10: keywords(b"alpha beta"), 11: keywords(b"Beta")}
blocks = []
for w in sorted({w for ws in docs.values() for w in ws}):
    seqs = sorted((s for s, ws in docs.items() if w in ws), reverse=True)
    s = segment_key(leaf(root(KG, 1, w), 5), 7)
    nb = (len(seqs) + 31) // 32
    nb = 1 << (nb - 1).bit_length()
    for i in range(nb):
        blocks.append(block_label(s, i) + block_body(s, 7, i, seqs[32 * i:32 * i + 32]))
check("sse.segment", b"".join(sorted(blocks, key=lambda b: b[:16])).hex())

# ---- keyring blob: nonce 90.., key 60.., room, epoch 3, gens 1 and 4 ----------
ROOM = b"team@rooms.example.com"
nonce = fill(24, 0x90)
pt = bytes([1]) + u32(2) + u32(1) + fill(32, 0x10) + u32(4) + fill(32, 0x30)
blob = nonce + xchacha_encrypt(fill(32, 0x60), nonce, pt, lp8(b"sealroom.sse.v1.keyring") + lp16(ROOM) + u64(3))
m = re.search(r'keyring_blob_hex\[\] =\s*((?:"[0-9a-f]*"\s*)+);', src)
want = "".join(re.findall(r'"([0-9a-f]*)"', m.group(1))) if m else ""
result(want == blob.hex(), "sse.keyring_blob", "\n  py   %s\n  test %s" % (blob.hex(), want))

print("%d failure(s)" % fails)
sys.exit(1 if fails else 0)
