"""Every form a planted secret could take in an output, and a scan for them.

A test plants a secret (a name, a plate, an SSID, a passphrase) and scans an
output -- the log store's files, a bundle, stderr -- for the secret itself
(any case) and for each encoding a log line might carry it in.
"""

from __future__ import annotations

import base64
import html
import json
import urllib.parse

# Forms compared case-insensitively; base64 is matched exactly (its case is the data).
_CASELESS = ("raw", "percent", "form", "json", "json-ascii", "hex", "bytes-repr", "html",
             "double-percent", "json-of-percent")


def encoded_forms(secret: str) -> dict[str, str]:
    raw = secret.encode("utf-8")
    forms = {
        "raw": secret,
        "percent": urllib.parse.quote(secret, safe=""),
        "form": urllib.parse.quote_plus(secret, safe=""),
        "json": json.dumps(secret, ensure_ascii=False)[1:-1],
        "json-ascii": json.dumps(secret)[1:-1],
        "hex": raw.hex(),
        "bytes-repr": repr(raw)[2:-1],
        "html": "".join(f"&#{ord(c)};" for c in secret),
        "double-percent": urllib.parse.quote(urllib.parse.quote(secret, safe=""), safe=""),
        "json-of-percent": json.dumps(urllib.parse.quote(secret, safe=""))[1:-1],
        "base64": base64.b64encode(raw).decode().rstrip("="),
        "base64url": base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }
    # A form identical to the plain text adds nothing; html.escape keeps the check honest.
    assert html.unescape(forms["html"]) == secret
    return forms


def leaks(secret: str, output: str | bytes) -> list[str]:
    """The names of the forms of ``secret`` found in ``output`` (empty: none leaked)."""
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    lowered = text.lower()
    found: list[str] = []
    for name, form in encoded_forms(secret).items():
        if name in _CASELESS:
            if form.lower() in lowered:
                found.append(name)
        elif form in text:
            found.append(name)
    return found
