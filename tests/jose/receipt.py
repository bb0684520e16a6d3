#!/usr/bin/env python3
"""Verify an optin consent receipt with jwcrypto, an independent JOSE implementation.

usage: receipt.py BUNDLE_JSON_FILE RECEIPT_JWS_FILE STATE

Takes the grant's public key (a JWK) from the bundle the person handed over, checks that its
RFC 7638 thumbprint is its `kid`, verifies the compact JWS with EdDSA only and the header
SPEC.md gives a receipt, checks the payload against protocol/schemas/optin-receipt.schema.json,
that it is the bundle's grant and marketer and that its last event has STATE (for instance
dpv:ConsentWithdrawn), and prints the payload JSON. Exits 1 with a message on any failure.
"""

import json
import pathlib
import sys

import jsonschema
from jwcrypto import jwk, jws

SCHEMA = pathlib.Path(__file__).resolve().parents[2] / "protocol" / "schemas" / "optin-receipt.schema.json"


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def main(argv):
    if len(argv) != 4:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        sys.exit(2)
    with open(argv[1], encoding="utf-8") as f:
        bundle = json.load(f)
    with open(argv[2], encoding="utf-8") as f:
        compact = f.read().strip()
    state = argv[3]

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
        expected = {"alg": "EdDSA", "kid": thumbprint, "typ": "optin-receipt+jwt"}
        if header != expected:
            fail(f"the header is {header}, expected {expected}")
        token.verify(key, alg="EdDSA")
    except jws.InvalidJWSSignature as e:
        fail(f"signature does not verify: {e}")
    except jws.InvalidJWSObject as e:
        fail(f"not a JWS: {e}")

    receipt = json.loads(token.payload)
    with open(SCHEMA, encoding="utf-8") as f:
        schema = json.load(f)
    try:
        jsonschema.validate(receipt, schema)
    except jsonschema.ValidationError as e:
        fail(f"the receipt does not match its schema: {e.message}")
    if receipt["record"]["record_id"] != bundle["grant_id"]:
        fail("the receipt names another grant")
    if [p["party_id"] for p in receipt["party_identification"]] != [bundle["marketer"]]:
        fail("the receipt's party is not the bundle's marketer")
    events = [e["state"] for e in receipt["event"]]
    if events[0] != "dpv:ConsentGiven" or events[-1] != state:
        fail(f"the receipt's events are {events}, expected dpv:ConsentGiven first and {state} last")
    print(json.dumps(receipt, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv)
