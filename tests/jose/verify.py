#!/usr/bin/env python3
"""Verify an optin slice with jwcrypto, an independent JOSE implementation.

usage: verify.py BUNDLE_JSON_FILE JWS_FILE

Reads the grant bundle the person handed over, takes its public key (a JWK), checks that
the key's RFC 7638 thumbprint is its `kid`, verifies the compact JWS with EdDSA only, and
prints the payload JSON on standard output. Exits 1 with a message on any failure.
"""

import json
import sys

from jwcrypto import jwk, jws


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        sys.exit(2)
    with open(argv[1], encoding="utf-8") as f:
        bundle = json.load(f)
    with open(argv[2], encoding="utf-8") as f:
        compact = f.read().strip()

    key = jwk.JWK.from_json(json.dumps(bundle["jwk"]))
    if key.get("kty") != "OKP" or key.get("crv") != "Ed25519":
        fail("the bundle's key is not an Ed25519 JWK")
    thumbprint = key.thumbprint()
    if bundle["jwk"].get("kid") != thumbprint:
        fail(f"kid {bundle['jwk'].get('kid')} is not the key's thumbprint {thumbprint}")

    token = jws.JWS()
    try:
        token.deserialize(compact)
        header = token.jose_header
        if header.get("alg") != "EdDSA":
            fail(f"unexpected alg {header.get('alg')}")
        if header.get("kid") != thumbprint:
            fail(f"the JWS names key {header.get('kid')}, expected {thumbprint}")
        token.verify(key, alg="EdDSA")
    except jws.InvalidJWSSignature as e:
        fail(f"signature does not verify: {e}")
    except jws.InvalidJWSObject as e:
        fail(f"not a JWS: {e}")

    payload = json.loads(token.payload)
    for claim, expected in (("iss", bundle["issuer"]), ("aud", bundle["marketer"])):
        if payload.get(claim) != expected:
            fail(f"claim {claim} is {payload.get(claim)!r}, expected {expected!r}")
    if payload.get("grant", {}).get("id") != bundle["grant_id"]:
        fail("the slice names another grant")
    print(json.dumps(payload, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv)
