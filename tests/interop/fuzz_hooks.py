"""Schemathesis hooks for test_fuzz.py: a check that no response shows a
value the caller may not read (AIRLOCK_FUZZ_HIDDEN lists them)."""

import os

import schemathesis

HIDDEN = [v for v in os.environ.get("AIRLOCK_FUZZ_HIDDEN", "").split("|") if v]


@schemathesis.check
def no_hidden_value(ctx, response, case):
    body = response.content or b""
    for value in HIDDEN:
        if value.encode() in body:
            raise AssertionError(f"a value the caller may not read appeared: {value!r}")
