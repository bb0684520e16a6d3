"""Writes token-filters.txt: a token narrowed by a caveat of each filter, and the terms a
grant comes to under it.

It uses only Python's standard library (hmac, hashlib, base64, json), not the Rust crate,
so the vector is an independent computation of SPEC.md's rules ("Tokens": the caveat
grammar, one spelling per caveat and how each narrows). Run it from this directory:
python3 token-filters.py > token-filters.txt
"""
import base64
import hashlib
import hmac
import json

SECRET = bytes(range(32))
GRANT = "g_000102030405060708090a0b"

# The grant's terms (SPEC.md, "Grants and scope"), as its record holds them.
TERMS = {
    "audience": "acme.example",
    "kinds": ["search", "cart", "purchase"],
    "granularity": "raw",
    "window": "30d",
    "expires_at": "2027-01-01T00:00:00Z",
    "categories": ["Apparel > Shoes", "Food, Beverages & Tobacco > Beverages"],
    "merchants": ["shoes.example", "drinks.example", "toys.example"],
    "fields": ["items.name", "items.price", "items.quantity", "merchant", "query", "total"],
    "rate": "10/day",
}

# What the holder narrows to, before it is written as caveats.
CATEGORIES = ["Food, Beverages & Tobacco > Beverages > Juice", "Apparel"]
MERCHANTS = ["shoes.example", "drinks.example", "other.example"]
FIELDS = ["total", "merchant", "order_id", "items.quantity", "items.price"]
RATE = (1, "hour")


def escape(path):
    out = []
    for ch in path:
        out.append({"%": "%25", ",": "%2C", '"': "%22", "\\": "%5C"}.get(ch, ch))
    return "".join(out)


def caveats():
    # Each list once per entry, sorted by its bytes (a category by its path before escaping).
    cats = sorted(set(CATEGORIES), key=lambda p: p.encode())
    return [
        "categories=" + ",".join(escape(p) for p in cats),
        "merchants=" + ",".join(sorted(set(MERCHANTS), key=str.encode)),
        "fields=" + ",".join(sorted(set(FIELDS), key=str.encode)),
        "rate=%d/%s" % RATE,
    ]


def tag(cs):
    t = hmac.new(SECRET, b"optin-token-v1\x00" + GRANT.encode(), hashlib.sha256).digest()
    for c in cs:
        t = hmac.new(t, c.encode(), hashlib.sha256).digest()
    return t


def b64(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def within(inner, outer):
    return inner == outer or inner.startswith(outer + " > ")


def per_day(rate):
    count, per = rate
    return count * (24 if per == "hour" else 1)


def narrowest(a, b):
    if a[1] == b[1]:
        return (min(a[0], b[0]), a[1])
    hourly, daily = (a[0], b[0]) if a[1] == "hour" else (b[0], a[0])
    by_day = (min(hourly, daily), "day")
    n = min(hourly, daily // 24)
    if n >= 1 and per_day((n, "hour")) > per_day(by_day):
        return (n, "hour")
    return by_day


def narrowed():
    granted = TERMS["categories"]
    kept = {c for c in CATEGORIES if any(within(c, g) for g in granted)}
    kept |= {g for g in granted if any(within(g, c) for c in CATEGORIES)}
    count, per = TERMS["rate"].split("/")
    rate = narrowest((int(count), per), RATE)
    return {
        "categories": sorted(kept, key=str.encode),
        "merchants": sorted((m for m in set(MERCHANTS) if m in TERMS["merchants"]), key=str.encode),
        "fields": sorted((f for f in set(FIELDS) if f in TERMS["fields"]), key=str.encode),
        "rate": "%d/%s" % rate,
    }


cs = caveats()
body = json.dumps({"v": 1, "g": GRANT, "c": cs}, separators=(",", ":"), ensure_ascii=False)
assert "\\" not in body, "a canonical body holds no escapes"
assert all(" | " not in c for c in cs)
print("# The token of token-root.txt narrowed offline by its holder with a caveat of each filter,")
print("# in this order, and the terms the grant below comes to under them (SPEC.md, \"Tokens\").")
print("# Computed independently of the Rust crate by token-filters.py (Python's standard library).")
print("secret: " + SECRET.hex())
print("grant_id: " + GRANT)
print("caveats: " + " | ".join(cs))
print("grant_terms: " + json.dumps(TERMS, separators=(",", ":"), ensure_ascii=False))
print("narrowed: " + json.dumps(narrowed(), separators=(",", ":"), ensure_ascii=False))
print("expect: optin_%s.%s" % (b64(body.encode()), b64(tag(cs))))
