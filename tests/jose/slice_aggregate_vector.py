#!/usr/bin/env python3
"""Write or check the aggregate slice vector of SPEC.md ("Slices", "Aggregate slices").

usage: slice_aggregate_vector.py write   # writes protocol/tests/vectors/slice-aggregate-jws.txt
       slice_aggregate_vector.py check   # computes it again and fails if the file differs

The payload is written from SPEC.md alone (compact JSON, members in the order the agent
writes them), signed with the Ed25519 of `cryptography` under the seed of slice-jws.txt, and
verified with `jwcrypto` as a marketer's JOSE library would. The Rust crate's tests must
reproduce the JWS byte for byte and read the counts and noise back.
"""

import base64
import hashlib
import json
import pathlib
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwcrypto import jwk, jws

ROOT = pathlib.Path(__file__).resolve().parents[2]
VECTOR = ROOT / "protocol" / "tests" / "vectors" / "slice-aggregate-jws.txt"
SEED = bytes(range(32))


def b64url(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def vector():
    key = Ed25519PrivateKey.from_private_bytes(SEED)
    x = b64url(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    kid = b64url(hashlib.sha256(compact({"crv": "Ed25519", "kty": "OKP", "x": x}).encode()).digest())
    payload = compact({
        "iss": "urn:optin:agent:p_00000000000000000000000000000000",
        "sub": "p_00000000000000000000000000000000",
        "aud": "acme.example",
        "iat": 1795392000,
        "jti": "s_00000000000000000000000000000000",
        "grant": {"id": "g_000102030405060708090a0b", "purpose": "shoe ads", "expires_at": "2027-02-21T00:00:00Z"},
        "scope": {"kinds": ["search", "cart"], "granularity": "aggregate", "since": "2026-10-24T00:00:00Z", "until": "2026-11-23T00:00:00Z", "limit": 100},
        "items": [],
        "counts": [
            {"kind": "search", "category": "Apparel & Accessories > Shoes", "count": 12},
            {"kind": "cart", "count": 7},
        ],
        "noise": {"mechanism": "two-sided-geometric", "epsilon": "0.5", "min_count": 5},
    })
    header = compact({"alg": "EdDSA", "kid": kid, "typ": "optin-slice+jwt"})
    signing_input = f"{b64url(header.encode())}.{b64url(payload.encode())}"
    signature = key.sign(signing_input.encode())
    expect = f"{signing_input}.{b64url(signature)}"
    # A marketer's JOSE library takes it.
    token = jws.JWS()
    token.deserialize(expect)
    token.verify(jwk.JWK(kty="OKP", crv="Ed25519", x=x), alg="EdDSA")
    return "\n".join([
        "# An aggregate slice JWS (SPEC.md, \"Aggregate slices\"), written by",
        "# tests/jose/slice_aggregate_vector.py. The Ed25519 seed is 32 bytes 0x00..0x1f (as in",
        "# slice-jws.txt); the payload is the exact byte string signed.",
        f"seed: {SEED.hex()}",
        f"payload: {payload}",
        f"kid: {kid}",
        f"expect: {expect}",
        "",
    ])


def main(argv):
    if argv[1:] == ["write"]:
        VECTOR.write_text(vector(), encoding="utf-8")
    elif argv[1:] == ["check"]:
        if VECTOR.read_text(encoding="utf-8") != vector():
            sys.exit(f"{VECTOR.name} differs from what SPEC.md computes")
    else:
        sys.exit(__doc__.strip().splitlines()[2])


if __name__ == "__main__":
    main(sys.argv)
