#!/usr/bin/env python3
"""A marketer's push inbox, written from SPEC.md ("Push events", "Consent receipts", "Slices",
"Grant bundle") with nothing but Python's standard library, the Ed25519 of `cryptography` and
`jwcrypto`: what a marketer would run to take an optin agent's pushes.

usage: inbox.py --cert PEM --key PEM --port PORT --marketer DOMAIN --record FILE [--tolerance SECONDS]

Serves HTTPS on 127.0.0.1:PORT (0 picks a free port) and prints `listening on 127.0.0.1:PORT`
once it accepts connections. Every POST is verified as SPEC.md asks of an inbox:

- the Standard Webhooks v1a headers: the id's form, the timestamp within the tolerance of
  this clock either way, then a `v1a` Ed25519 signature over `{id}.{timestamp}.{body}`, the
  body as received, with the grant's key;
- the grant's key is pinned from the bundle of its `grant.created`, and every later event of
  the grant is verified with the pinned key, never with a key a push carries;
- the body's form, the `webhook-id` the event must have, and what it carries: the bundle and
  its receipt, a slice (issuer, audience, grant, `jti`), the receipt of the grant's end, each
  JWS verified with jwcrypto;
- an id already taken is acknowledged again and not stored twice; once a grant is revoked or
  has expired, any other event of it is answered 410 Gone, which asks the agent to stop.

A refused POST is answered 4xx with the reason as text and nothing is recorded. Each accepted
event is appended to FILE as one JSON line: its type, webhook-id, grant id, the number of
items for a slice, and the headers and body as received (the evidence a marketer keeps).
"""

import argparse
import base64
import binascii
import datetime
import http.server
import json
import pathlib
import re
import ssl
import sys
import threading
import time

import jsonschema
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from jwcrypto import jwk, jws

# The JSON Schemas SPEC.md names for a push's body and a receipt, as a marketer would take
# them from the protocol's repository.
SCHEMAS = pathlib.Path(__file__).resolve().parents[2] / "protocol" / "schemas"
# SPEC.md, "Push events": a body is at most 32 MiB + 64 KiB.
MAX_BODY = 32 * 1024 * 1024 + 64 * 1024
WEBHOOK_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
TIMESTAMP = re.compile(r"[0-9]{1,12}")
GRANT_ID = re.compile(r"g_[0-9a-f]{24}")
PSEUDONYM = re.compile(r"p_[0-9a-f]{32}")
JTI = re.compile(r"s_[0-9a-f]{32}")
ISSUER_PREFIX = "urn:optin:agent:"
# The state a receipt's last event must have, by the event that carries it.
RECEIPT_STATE = {
    "grant.created": "dpv:ConsentGiven",
    "grant.revoked": "dpv:ConsentWithdrawn",
    "grant.expired": "dpv:ConsentExpired",
}
DATA_MEMBERS = {
    "grant.created": {"bundle", "receipt"},
    "slice.delivered": {"grant_id", "jti", "slice"},
    "grant.revoked": {"grant_id", "receipt"},
    "grant.expired": {"grant_id", "receipt"},
}


class Refused(Exception):
    """A POST the inbox does not take: the status to answer and why."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def no_repeated_keys(pairs):
    # SPEC.md: repeated keys are refused. json.loads would keep the last one silently.
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise Refused(400, f"repeated key in {keys}")
    return dict(pairs)


def parse_json(text, what):
    try:
        return json.loads(text, object_pairs_hook=no_repeated_keys)
    except (ValueError, RecursionError) as e:
        raise Refused(400, f"{what} is not JSON: {e}") from None


def b64url_decode(text, what):
    # SPEC.md, "Conventions": no padding, the URL alphabet, canonical trailing bits.
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text) or len(text) % 4 == 1:
        raise Refused(400, f"{what} is not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if base64.urlsafe_b64encode(data).decode().rstrip("=") != text:
        raise Refused(400, f"{what} is not canonical base64url")
    return data


def parse_time(text, what):
    if not isinstance(text, str):
        raise Refused(400, f"{what} is not a string")
    try:
        at = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise Refused(400, f"{what} is not an RFC 3339 time") from None
    if at.tzinfo is None or "T" not in text.upper():
        raise Refused(400, f"{what} is not an RFC 3339 time")
    return at


def schema(name):
    with open(SCHEMAS / name, encoding="utf-8") as f:
        document = json.load(f)
    jsonschema.Draft202012Validator.check_schema(document)
    return jsonschema.Draft202012Validator(document, format_checker=jsonschema.FormatChecker())


EVENT_SCHEMA = schema("optin-push-event.schema.json")
RECEIPT_SCHEMA = schema("optin-receipt.schema.json")


def conform(validator, document, what):
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is not None:
        path = "/".join(str(p) for p in error.absolute_path)
        raise Refused(422, f"{what} does not follow its schema at /{path}: {error.message}")


def grant_key(bundle_jwk):
    """The bundle's public key as jwcrypto holds it, after checking it is the grant's key as
    SPEC.md writes it: an Ed25519 JWK whose `kid` is its RFC 7638 thumbprint."""
    if not isinstance(bundle_jwk, dict):
        raise Refused(400, "the bundle's jwk is not an object")
    if bundle_jwk.get("kty") != "OKP" or bundle_jwk.get("crv") != "Ed25519" or "d" in bundle_jwk:
        raise Refused(422, "the bundle's jwk is not an Ed25519 public key")
    if bundle_jwk.get("alg") != "EdDSA" or bundle_jwk.get("use") != "sig":
        raise Refused(422, "the bundle's jwk is not for EdDSA signatures")
    if len(b64url_decode(bundle_jwk.get("x", ""), "the jwk's x")) != 32:
        raise Refused(422, "the bundle's jwk is not 32 bytes")
    key = jwk.JWK(kty="OKP", crv="Ed25519", x=bundle_jwk["x"])
    if bundle_jwk.get("kid") != key.thumbprint():
        raise Refused(422, "the bundle's kid is not its key's thumbprint")
    return key


def verify_jws(compact, key, typ, what):
    """Verifies a compact JWS of the grant with jwcrypto, EdDSA only, and returns its claims.
    The protected header must be exactly alg, kid (the key's thumbprint) and typ."""
    if not isinstance(compact, str) or compact.count(".") != 2:
        raise Refused(400, f"{what} is not a compact JWS")
    header = parse_json(b64url_decode(compact.split(".")[0], f"{what}'s header"), f"{what}'s header")
    expected = {"alg": "EdDSA", "kid": key.thumbprint(), "typ": typ}
    if header != expected:
        raise Refused(422, f"{what}'s header is {header}, not {expected}")
    token = jws.JWS()
    try:
        token.deserialize(compact)
        token.verify(key, alg="EdDSA")
    except (jws.InvalidJWSObject, jws.InvalidJWSSignature, ValueError) as e:
        raise Refused(422, f"{what} does not verify with the grant's key: {e}") from None
    claims = parse_json(token.payload, f"{what}'s payload")
    if not isinstance(claims, dict):
        raise Refused(422, f"{what}'s payload is not an object")
    return claims


class Grant:
    """What the inbox keeps of a grant: the bundle pinned by its first push, and its end."""

    def __init__(self, bundle, key):
        self.bundle = bundle
        self.key = key
        self.ended_by = None  # the webhook-id of grant.revoked or grant.expired, once taken


class Inbox:
    def __init__(self, marketer, record, tolerance):
        self.marketer = marketer
        self.record = record
        self.tolerance = tolerance
        self.grants = {}
        self.seen = set()
        # One event is decided and recorded at a time, so a duplicate sent on two
        # connections at once is still stored once.
        self.lock = threading.Lock()

    def take(self, headers, body):
        """Decides one POST: returns the status and text to answer, or raises Refused."""
        webhook_id = headers.get("webhook-id") or ""
        timestamp = headers.get("webhook-timestamp") or ""
        signature = headers.get("webhook-signature") or ""
        # The id's form and the timestamp come before the signature, as SPEC.md orders it.
        if not WEBHOOK_ID.fullmatch(webhook_id):
            raise Refused(400, "webhook-id is missing or not 1-128 of A-Z a-z 0-9 _ -")
        if not TIMESTAMP.fullmatch(timestamp):
            raise Refused(400, "webhook-timestamp is missing or not 1-12 digits")
        skew = int(timestamp) - int(time.time())
        if abs(skew) > self.tolerance:
            raise Refused(401, f"webhook-timestamp is {skew} s from this inbox's clock, beyond {self.tolerance} s")
        signatures = parse_signatures(signature)

        # The body is read before its signature only to learn which grant, and so which
        # key, it claims; nothing in it counts until the signature verifies.
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise Refused(400, "the body is not UTF-8") from None
        event = parse_json(text, "the body")
        if not isinstance(event, dict) or list(event) != ["type", "timestamp", "data"]:
            raise Refused(400, "the body is not {\"type\",\"timestamp\",\"data\"} in that order")
        kind, data = event["type"], event["data"]
        if kind not in DATA_MEMBERS:
            raise Refused(400, f"unknown event type {kind!r}")
        parse_time(event["timestamp"], "the event's timestamp")
        conform(EVENT_SCHEMA, event, "the body")
        if not isinstance(data, dict) or set(data) != DATA_MEMBERS[kind]:
            raise Refused(400, f"{kind}'s data is not {sorted(DATA_MEMBERS[kind])}")

        with self.lock:
            if kind == "grant.created":
                bundle = data["bundle"]
                if not isinstance(bundle, dict):
                    raise Refused(400, "the bundle is not an object")
                grant_id = bundle.get("grant_id")
            else:
                grant_id = data["grant_id"]
            if not isinstance(grant_id, str) or not GRANT_ID.fullmatch(grant_id):
                raise Refused(400, "the grant id is not g_ and 24 hex digits")
            grant = self.grants.get(grant_id)
            if grant is not None:
                # SPEC.md, "Trust": a known grant's events verify with the key pinned on its
                # grant.created, never with one a push carries, a new bundle's included.
                key = grant.key
            elif kind == "grant.created":
                key = grant_key(data["bundle"]["jwk"])
            else:
                raise Refused(404, f"no grant.created was taken for {grant_id}, so nothing can verify this event")
            verify_signatures(key, signatures, f"{webhook_id}.{timestamp}.".encode() + body)

            if grant is not None and grant.ended_by is not None and grant.ended_by != webhook_id:
                raise Refused(410, f"grant {grant_id} has ended ({grant.ended_by})")
            if webhook_id in self.seen:
                return 200, "already taken\n"

            expected_id = data["jti"] if kind == "slice.delivered" else f"{grant_id}-{kind.split('.')[1]}"
            if webhook_id != expected_id:
                raise Refused(422, f"webhook-id {webhook_id} is not this event's id {expected_id}")
            line = {"type": kind, "webhook_id": webhook_id, "grant_id": grant_id}
            if kind == "grant.created":
                bundle = data["bundle"]
                self.check_bundle(bundle)
                self.check_receipt(data["receipt"], key, bundle, kind)
                grant = Grant(bundle, key)
            elif kind == "slice.delivered":
                line["items"] = self.check_slice(data, grant)
            else:
                self.check_receipt(data["receipt"], key, grant.bundle, kind)

            line["headers"] = {"webhook-id": webhook_id, "webhook-timestamp": timestamp, "webhook-signature": signature}
            line["body"] = text
            # Recorded before it is acknowledged: a 2xx tells the agent the event is settled.
            with open(self.record, "a", encoding="utf-8") as f:
                f.write(json.dumps(line, separators=(",", ":")) + "\n")
            self.seen.add(webhook_id)
            self.grants[grant_id] = grant
            if kind in ("grant.revoked", "grant.expired"):
                grant.ended_by = webhook_id
            return 200, "taken\n"

    def check_bundle(self, bundle):
        if bundle.get("version") != 1:
            raise Refused(422, "the bundle is not version 1")
        if bundle.get("marketer") != self.marketer:
            raise Refused(422, f"the bundle is for {bundle.get('marketer')!r}, not {self.marketer}")
        issuer = bundle.get("issuer")
        if not isinstance(issuer, str) or not issuer.startswith(ISSUER_PREFIX) or not PSEUDONYM.fullmatch(issuer[len(ISSUER_PREFIX):]):
            raise Refused(422, "the bundle's issuer is not urn:optin:agent: and a pseudonym")
        terms = bundle.get("terms")
        if not isinstance(terms, dict) or terms.get("audience") != self.marketer:
            raise Refused(422, "the bundle's terms are not for this marketer")

    def check_receipt(self, compact, key, bundle, kind):
        """SPEC.md, "Consent receipts": the receipt names the event's grant and state."""
        receipt = verify_jws(compact, key, "optin-receipt+jwt", "the receipt")
        conform(RECEIPT_SCHEMA, receipt, "the receipt")
        record = receipt.get("record") or {}
        if record.get("schema_version") != "optin-receipt/1":
            raise Refused(422, "the receipt is not optin-receipt/1")
        if record.get("record_id") != bundle["grant_id"]:
            raise Refused(422, "the receipt is of another grant")
        if ISSUER_PREFIX + str(record.get("pii_principal_id")) != bundle["issuer"]:
            raise Refused(422, "the receipt's principal is not the bundle's pseudonym")
        # Whether a receipt must answer a request is its schema's to say; one that does must
        # answer this marketer's.
        if "request" in receipt and (receipt["request"] or {}).get("marketer") != self.marketer:
            raise Refused(422, "the receipt answers another marketer's request")
        purposes = (receipt.get("pii_processing") or {}).get("purposes")
        if not isinstance(purposes, list) or len(purposes) != 1:
            raise Refused(422, "the receipt does not hold one purpose")
        if purposes[0].get("lawful_basis") != "dpv:Consent" or purposes[0].get("pii_controllers") != [self.marketer]:
            raise Refused(422, "the receipt's purpose is not consent to this marketer")
        parties = receipt.get("party_identification")
        if not isinstance(parties, list) or [(p.get("party_id"), p.get("party_role")) for p in parties] != [(self.marketer, "dpv:DataController")]:
            raise Refused(422, "the receipt's party is not this marketer as controller")
        events = receipt.get("event")
        if not isinstance(events, list) or not events:
            raise Refused(422, "the receipt has no events")
        states = [e.get("state") for e in events]
        expected = ["dpv:ConsentGiven"] if kind == "grant.created" else ["dpv:ConsentGiven", RECEIPT_STATE[kind]]
        if states != expected:
            raise Refused(422, f"the receipt's events are {states}, not {expected} for {kind}")
        for e in events:
            if e.get("type") != "dpv:ExplicitlyExpressedConsent" or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(e.get("event_time"))):
                raise Refused(422, "a receipt event is not a day of explicitly expressed consent")

    def check_slice(self, data, grant):
        """SPEC.md, "Slices": the marketer's checks, and the event's jti. Returns the item count."""
        bundle = grant.bundle
        claims = verify_jws(data["slice"], grant.key, "optin-slice+jwt", "the slice")
        if claims.get("iss") != bundle["issuer"]:
            raise Refused(422, "the slice's issuer is not the bundle's")
        if claims.get("aud") != self.marketer:
            raise Refused(422, f"the slice is for {claims.get('aud')!r}, not {self.marketer}")
        if (claims.get("grant") or {}).get("id") != bundle["grant_id"]:
            raise Refused(422, "the slice is of another grant")
        if claims.get("jti") != data["jti"] or not JTI.fullmatch(str(data["jti"])):
            raise Refused(422, "the slice's jti is not the event's")
        items = claims.get("items")
        if not isinstance(items, list):
            raise Refused(422, "the slice has no items")
        return len(items)


def parse_signatures(header):
    """`webhook-signature`: at most 8 space-separated `scheme,signature`, at most 1024 bytes.
    Returns the 64-byte signatures of the `v1a` entries; other schemes are skipped."""
    if not header or len(header.encode()) > 1024:
        raise Refused(400, "webhook-signature is missing or over 1024 bytes")
    entries = header.split(" ")
    if len(entries) > 8:
        raise Refused(400, "webhook-signature has more than 8 entries")
    found = []
    for entry in entries:
        scheme, comma, value = entry.partition(",")
        if not comma:
            raise Refused(400, f"webhook-signature entry {entry[:16]!r} is not scheme,signature")
        if scheme != "v1a":
            continue
        # Standard base64 with padding (RFC 4648 section 4), not base64url. An entry that is
        # not a signature is one that does not verify: the push is taken if another does.
        try:
            signature = base64.b64decode(value, validate=True)
        except binascii.Error:
            continue
        if len(signature) == 64 and base64.b64encode(signature).decode() == value:
            found.append(signature)
    return found


def verify_signatures(key, signatures, signed):
    public = Ed25519PublicKey.from_public_bytes(b64url_decode(key.export_public(as_dict=True)["x"], "the key"))
    for signature in signatures:
        try:
            public.verify(signature, signed)
            return
        except InvalidSignature:
            continue
    raise Refused(401, "no v1a signature verifies with the grant's key")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # An idle or slow connection is closed rather than holding a thread.
    timeout = 30
    server_version = "optin-test-inbox"

    def do_POST(self):
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return self.answer(411, "a Content-Length is required\n")
        if int(length) > MAX_BODY:
            return self.answer(413, "the body is over 32 MiB + 64 KiB\n")
        body = self.rfile.read(int(length))
        if len(body) != int(length):
            return self.answer(400, "the body is shorter than its Content-Length\n")
        try:
            status, text = self.server.inbox.take(self.headers, body)
        except Refused as refused:
            status, text = refused.status, refused.reason + "\n"
            sys.stderr.write(f"refused {self.headers.get('webhook-id')!r}: {status} {refused.reason}\n")
        self.answer(status, text)

    def do_GET(self):
        self.answer(405, "POST only\n", [("Allow", "POST")])

    def answer(self, status, text, extra=()):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), format % args))


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, context, inbox):
        super().__init__(address, Handler)
        self.context = context
        self.inbox = inbox

    def finish_request(self, request, client_address):
        # The TLS handshake happens here, on the connection's own thread, bounded, so a
        # client that never completes it holds up no other.
        request.settimeout(10)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.unwrap()
            except (ssl.SSLError, OSError, ValueError):
                pass
            tls.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--cert", required=True, help="the server certificate, PEM")
    parser.add_argument("--key", required=True, help="its private key, PEM")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--marketer", required=True, help="this marketer's domain: the audience of its grants")
    parser.add_argument("--record", required=True, help="the file each accepted event is appended to")
    parser.add_argument("--tolerance", type=int, default=300, help="seconds a webhook-timestamp may be off, either way")
    args = parser.parse_args()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(args.cert, args.key)
    context.set_alpn_protocols(["http/1.1"])
    server = Server(("127.0.0.1", args.port), context, Inbox(args.marketer, args.record, args.tolerance))
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
