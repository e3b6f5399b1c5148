"""What to do with text the camera read from a QR code.

``WIFI:`` payloads become credentials to try; a JSON object is an account
binding: its proof is checked against this device's verification code first
(a forged QR must not burn a real token), then its single-use token is
redeemed against the ledger.  A code held in front of the camera is read
again every second, so the same text is not acted on twice within
``repeat_seconds``.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib

from agent.errors import BadDataError
from agent.provisioning import binding, wifi_qr
from agent.provisioning.binding import Binding, BindingRequest, TokenLedger
from agent.provisioning.wifi import WifiCredentials


class QrKind(enum.Enum):
    WIFI = "wifi"
    BINDING = "binding"
    REPEATED = "repeated"
    REJECTED = "rejected"


@dataclasses.dataclass(frozen=True)
class QrOutcome:
    kind: QrKind
    credentials: WifiCredentials | None = None
    binding: BindingRequest | None = None
    reason: str = ""


class QrChannel:
    def __init__(self, ledger: TokenLedger, device: Binding, repeat_seconds: float = 30.0) -> None:
        self._ledger = ledger
        self._device = device
        self._repeat = repeat_seconds
        self._last_digest = b""
        self._last_at = float("-inf")

    def forget_last(self) -> None:
        """Allow the same code again at once (e.g. after the Wi-Fi changed)."""
        self._last_digest = b""

    def handle_text(self, text: str, now: float) -> QrOutcome:
        digest = hashlib.sha256(text.encode("utf-8", "replace")).digest()
        if digest == self._last_digest and now - self._last_at < self._repeat:
            return QrOutcome(QrKind.REPEATED)
        self._last_digest, self._last_at = digest, now
        try:
            if text[:5].upper() == wifi_qr.PREFIX:
                return QrOutcome(QrKind.WIFI, credentials=wifi_qr.parse_wifi_qr(text).credentials)
            if text.lstrip().startswith("{"):
                request = binding.parse_binding_payload(text, now)
                binding.verify_binding_proof(request, self._device)
                return QrOutcome(QrKind.BINDING, binding=binding.redeem(request, self._ledger, now))
        except BadDataError as exc:
            return QrOutcome(QrKind.REJECTED, reason=str(exc))
        return QrOutcome(QrKind.REJECTED, reason="not a provisioning QR code")
