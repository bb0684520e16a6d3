"""How schemathesis puts an NDJSON body on the wire; it knows no serializer for it."""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson", "application/jsonl")
def ndjson(ctx, value):
    # The document describes the body as text. Text is sent as it is; lone surrogates become
    # the bytes that are not UTF-8, which the agent must refuse with a 400, not fail on.
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    # A negative case may make the body another JSON value: it goes as one line, which is no
    # signal, so the agent must refuse it.
    return (json.dumps(value) + "\n").encode()
