"""Writes token-non-canonical.txt: tokens that verify but are not in canonical form.

It uses only Python's standard library (hmac, hashlib, base64, json), not the Rust crate,
so the vectors are an independent computation of SPEC.md's token rules. Run it from this
directory: python3 token-non-canonical.py > token-non-canonical.txt
"""
import base64
import hashlib
import hmac

SECRET = bytes(range(32))
GRANT = "g_000102030405060708090a0b"


def tag(caveats):
    t = hmac.new(SECRET, b"optin-token-v1\x00" + GRANT.encode(), hashlib.sha256).digest()
    for c in caveats:
        t = hmac.new(t, c.encode(), hashlib.sha256).digest()
    return t


def b64(data, pad=False):
    text = base64.urlsafe_b64encode(data).decode()
    return text if pad else text.rstrip("=")


def trailing_bit(text):
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return text[:-1] + alphabet[alphabet.index(text[-1]) ^ 1]


def body(caveats):
    c = "".join([',"c":[', ",".join('"%s"' % x for x in caveats), "]"]) if caveats else ""
    return '{"v":1,"g":"%s"%s}' % (GRANT, c)


def token(body_text, tag_text):
    return "optin_%s.%s" % (body_text, tag_text)


CAVEATS = ["kinds=search", "aud=partner.example"]
GOOD = body(CAVEATS)
TAG = b64(tag(CAVEATS))
# A body whose length is not a multiple of 3, so its last base64 character has spare bits.
ODD_CAVEATS = ["kinds=search", "aud=partner.exampl"]
ODD = body(ODD_CAVEATS)
assert len(ODD) % 3 != 0

cases = [
    ("tag with padding", token(b64(GOOD.encode()), b64(tag(CAVEATS), pad=True)), "tag is base64url with padding"),
    ("tag with a trailing bit set", token(b64(GOOD.encode()), trailing_bit(TAG)), "tag is base64url with padding or non-zero trailing bits"),
    ("body with padding", token(b64(ODD.encode(), pad=True), b64(tag(ODD_CAVEATS))), "body is base64url with padding"),
    ("body with a trailing bit set", token(trailing_bit(b64(ODD.encode())), b64(tag(ODD_CAVEATS))), "body is base64url with padding or non-zero trailing bits"),
    ("a space after a colon", token(b64(GOOD.replace(":", ": ", 1).encode()), TAG), "body is not compact JSON"),
    ("a trailing newline", token(b64((GOOD + "\n").encode()), TAG), "body is not compact JSON"),
    ("keys in another order", token(b64(('{"g":"%s","v":1,"c":["kinds=search","aud=partner.example"]}' % GRANT).encode()), TAG), "keys v, g, c in that order"),
    ("an escaped character", token(b64(GOOD.replace("g_", "g\\u005f", 1).encode()), TAG), "no escapes"),
    ("an empty caveat list", token(b64(('{"v":1,"g":"%s","c":[]}' % GRANT).encode()), b64(tag([]))), "no empty c"),
    ("a duplicate key", token(b64(GOOD.replace('{"v":1,', '{"v":1,"v":1,', 1).encode()), TAG), "each at most once"),
]
for caveat in ["window=14d", "kinds=cart,search", "kinds=search,search", "expires=2027-01-01T01:00:00+01:00"]:
    cases.append(("caveat " + caveat, token(b64(body([caveat]).encode()), b64(tag([caveat]))), "a caveat is not written as it prints"))

print("# Tokens that MUST be refused (SPEC.md, \"Tokens\": a token has one canonical text). Each")
print("# is made from the grant of token-root.txt and carries a tag that verifies, so its spelling")
print("# alone is at fault. `because:` is text the refusal must contain. Computed independently")
print("# of the Rust crate by token-non-canonical.py (Python's standard library only).")
print("secret: " + SECRET.hex())
print("grant_id: " + GRANT)
for what, text, because in cases:
    print()
    print("# " + what)
    print("refuse: " + text)
    print("because: " + because)
