#!/usr/bin/env python3
"""Write or check the test vectors of SPEC.md's consent requests, receipts and push events.

usage: consent_vectors.py write   # writes protocol/tests/vectors/{request-jws,receipt-jws,receipt-unasked-jws,webhook-v1a}.txt
       consent_vectors.py check   # computes them again and fails if a file differs

Everything here is computed from SPEC.md alone, with Python's standard library, the Ed25519 of
`cryptography`, and `jwcrypto` to verify the JWS the way a marketer's JOSE library would; the
documents are also checked against the JSON Schemas in protocol/schemas/. Nothing comes from
the Rust crate: its tests must reproduce these files byte for byte.
"""

import base64
import datetime
import hashlib
import json
import pathlib
import sys

import jsonschema
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwcrypto import jwk, jws

ROOT = pathlib.Path(__file__).resolve().parents[2]
VECTORS = ROOT / "protocol" / "tests" / "vectors"
SCHEMAS = ROOT / "protocol" / "schemas"

# The marketer's key and the grant's key: fixed seeds, so the signatures are fixed too.
MARKETER_SEED = bytes([0x42] * 32)
GRANT_SEED = bytes(range(32))  # the seed of slice-jws.txt: the grant that signs slices
GRANT_ID = "g_000102030405060708090a0b"
PRINCIPAL = "p_00000000000000000000000000000000"
APPROVED_AT = datetime.datetime(2026, 11, 23, 12, 34, 56, tzinfo=datetime.timezone.utc)
UNASKED_PURPOSE = "Show you offers on what you leave in carts."


def b64url(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def compact(value):
    """JSON as the agent writes it: no spaces, members in the order given, UTF-8 as is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def public_x(private):
    return b64url(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def thumbprint(x):
    # RFC 7638: the required members of an OKP key, in lexicographic order, no whitespace.
    canonical = compact({"crv": "Ed25519", "kty": "OKP", "x": x})
    return b64url(hashlib.sha256(canonical.encode()).digest())


def sign_compact(private, header, payload):
    signing_input = b64url(compact(header).encode()) + "." + b64url(payload.encode())
    return signing_input + "." + b64url(private.sign(signing_input.encode()))


def jose_verify(token, key_json, typ):
    """Verify with jwcrypto, EdDSA only, and return the payload text."""
    key = jwk.JWK.from_json(key_json)
    parsed = jws.JWS()
    parsed.deserialize(token)
    header = parsed.jose_header
    assert header["alg"] == "EdDSA" and header["typ"] == typ and header["kid"] == key.thumbprint(), header
    parsed.verify(key, alg="EdDSA")
    return parsed.payload.decode()


def schema_check(name, document):
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(document)


REQUEST = {
    "version": 1,
    "id": "shoes-2026-11",
    "issued_at": "2026-11-20T00:00:00Z",
    "expires_at": "2027-01-31T00:00:00Z",
    "marketer": {
        "name": "Acme Shoes",
        "domain": "acme.example",
        "contact": "privacy@acme.example",
        "privacy_policy": "https://acme.example/privacy",
    },
    "purpose": {"code": "dpv:PersonalisedAdvertising", "text": "Show you running-shoe offers that fit what you look for."},
    "terms": {
        "kinds": ["search", "cart"],
        "granularity": "category",
        "window": "30d",
        "duration": "90d",
        "categories": ["Apparel & Accessories > Shoes"],
        "merchants": ["shoes.example", "trail.example"],
    },
    "offer": "10% off your next pair",
    "delivery": {"method": "push", "inbox": "https://inbox.acme.example/optin", "every": "1d"},
}


def request_vector():
    key = Ed25519PrivateKey.from_private_bytes(MARKETER_SEED)
    x = public_x(key)
    payload = compact(REQUEST)
    header = {"alg": "EdDSA", "kid": thumbprint(x), "typ": "optin-request+jwt", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": x}}
    token = sign_compact(key, header, payload)
    # A marketer's tooling reads the key from the header, as the agent does.
    assert jose_verify(token, compact(header["jwk"]), "optin-request+jwt") == payload
    schema_check("optin-request.schema.json", REQUEST)
    return "\n".join([
        "# A signed consent request (SPEC.md, \"Consent requests\"). The marketer's Ed25519 seed is",
        "# 32 bytes 0x42; the payload is the exact byte string signed. Verify it fetched from",
        "# https://acme.example/.well-known/optin-request.json at `now`.",
        f"seed: {MARKETER_SEED.hex()}",
        f"jwk_x: {x}",
        f"kid: {thumbprint(x)}",
        "domain: acme.example",
        "now: 2026-11-23T12:00:00Z",
        f"payload: {payload}",
        f"expect: {token}",
        "",
    ])


def receipt_document():
    # The person approved the request above with --kinds cart, at APPROVED_AT. The grant
    # expires at APPROVED_AT + 90 days, rounded up to the next UTC midnight.
    end = APPROVED_AT + datetime.timedelta(days=90)
    midnight = datetime.datetime.combine(end.date(), datetime.time(), tzinfo=datetime.timezone.utc)
    expires = midnight if midnight == end else midnight + datetime.timedelta(days=1)
    terms = REQUEST["terms"]
    return {
        "record": {"schema_version": "optin-receipt/1", "record_id": GRANT_ID, "pii_principal_id": PRINCIPAL},
        "request": {"id": REQUEST["id"], "marketer": REQUEST["marketer"]["domain"]},
        "pii_processing": {
            "privacy_notice": REQUEST["marketer"]["privacy_policy"],
            "purposes": [{
                "purpose": REQUEST["purpose"]["text"],
                "purpose_type": REQUEST["purpose"]["code"],
                "lawful_basis": "dpv:Consent",
                "pii_information": ["cart"],
                "pii_controllers": [REQUEST["marketer"]["domain"]],
                "terms": {
                    "granularity": terms["granularity"],
                    "window": terms["window"],
                    "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "categories": terms["categories"],
                    "merchants": terms["merchants"],
                },
            }],
        },
        "party_identification": [{
            "party_id": REQUEST["marketer"]["domain"],
            "party_name": REQUEST["marketer"]["name"],
            "party_role": "dpv:DataController",
            "party_contact": REQUEST["marketer"]["contact"],
        }],
        "event": [{"event_time": APPROVED_AT.date().isoformat(), "type": "dpv:ExplicitlyExpressedConsent", "state": "dpv:ConsentGiven"}],
    }


def unasked_receipt_document():
    # The person granted acme.example carts at category level for 30 days back, for 90 days,
    # with `optin grant`, unasked: no request, so no notice, purpose code or contact.
    document = receipt_document()
    del document["request"], document["pii_processing"]["privacy_notice"], document["party_identification"][0]["party_contact"]
    purpose = document["pii_processing"]["purposes"][0]
    del purpose["purpose_type"], purpose["terms"]["categories"], purpose["terms"]["merchants"]
    purpose["purpose"] = UNASKED_PURPOSE
    document["party_identification"][0]["party_name"] = REQUEST["marketer"]["domain"]
    return document


def receipt_vector(document=None, about=None):
    key = Ed25519PrivateKey.from_private_bytes(GRANT_SEED)
    x = public_x(key)
    document = document or receipt_document()
    payload = compact(document)
    token = sign_compact(key, {"alg": "EdDSA", "kid": thumbprint(x), "typ": "optin-receipt+jwt"}, payload)
    assert jose_verify(token, compact({"kty": "OKP", "crv": "Ed25519", "x": x}), "optin-receipt+jwt") == payload
    schema_check("optin-receipt.schema.json", document)
    return "\n".join([
        *(about or [
            "# A consent receipt (SPEC.md, \"Consent receipts\"): the request of request-jws.txt approved",
            "# with --kinds cart at `approved_at`, signed with the grant's key (seed 0x00..0x1f).",
        ]),
        f"seed: {GRANT_SEED.hex()}",
        f"kid: {thumbprint(x)}",
        f"grant_id: {GRANT_ID}",
        f"principal: {PRINCIPAL}",
        "kinds: cart",
        f"approved_at: {APPROVED_AT.strftime('%Y-%m-%dT%H:%M:%SZ')}",
        f"payload: {payload}",
        f"expect: {token}",
        "",
    ])


def slice_of_the_vectors():
    for line in (VECTORS / "slice-jws.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith("expect: "):
            return line[len("expect: "):]
    raise SystemExit("slice-jws.txt has no expect line")


def webhook_vector():
    key = Ed25519PrivateKey.from_private_bytes(GRANT_SEED)
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    slice_jws = slice_of_the_vectors()
    jti = json.loads(base64.urlsafe_b64decode(slice_jws.split(".")[1] + "=="))["jti"]
    event = {"type": "slice.delivered", "timestamp": "2026-11-23T12:00:00Z", "data": {"grant_id": GRANT_ID, "jti": jti, "slice": slice_jws}}
    body = compact(event)
    schema_check("optin-push-event.schema.json", event)
    timestamp = "1795435200"  # 2026-11-23T12:00:00Z
    signed = f"{jti}.{timestamp}.{body}".encode()
    signature = "v1a," + base64.b64encode(key.sign(signed)).decode()
    # What an inbox does, with nothing but the whpk_ key: standard base64, padded.
    whpk = "whpk_" + base64.b64encode(public).decode()
    Ed25519PublicKey.from_public_bytes(base64.b64decode(whpk[len("whpk_"):])).verify(base64.b64decode(signature[len("v1a,"):]), signed)
    return "\n".join([
        "# A signed push (SPEC.md, \"Push events\"): the slice of slice-jws.txt delivered, signed per",
        "# Standard Webhooks v1a with the grant's key (seed 0x00..0x1f). The signed bytes are",
        "# `{id}.{timestamp}.{body}`; `expect` is the webhook-signature header.",
        f"seed: {GRANT_SEED.hex()}",
        f"whpk: {whpk}",
        f"id: {jti}",
        f"timestamp: {timestamp}",
        f"body: {body}",
        f"expect: {signature}",
        "",
    ])


def main(argv):
    if len(argv) != 2 or argv[1] not in ("write", "check"):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        sys.exit(2)
    unasked = receipt_vector(unasked_receipt_document(), [
        "# The receipt of a grant made unasked (SPEC.md, \"Consent receipts\"): `optin grant acme.example",
        "# --kinds cart --granularity category --window 30d --expires 90d --purpose \"<purpose>\"` at",
        "# `approved_at`, signed with the grant's key (seed 0x00..0x1f). It names no request.",
        f"purpose: {UNASKED_PURPOSE}",
    ])
    files = {
        "request-jws.txt": request_vector(),
        "receipt-jws.txt": receipt_vector(),
        "receipt-unasked-jws.txt": unasked,
        "webhook-v1a.txt": webhook_vector(),
    }
    stale = []
    for name, text in files.items():
        path = VECTORS / name
        if argv[1] == "write":
            path.write_text(text, encoding="utf-8")
        elif not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    if stale:
        print(f"error: vectors differ from what SPEC.md computes: {', '.join(stale)}", file=sys.stderr)
        sys.exit(1)
    print(f"{argv[1]}: {', '.join(files)}")


if __name__ == "__main__":
    main(sys.argv)
