"""AI → human handoffs: the request the AI sends, checked, and the service that carries it out.

Plain Python (no Flask): the HTTP API (webhooks.api) and `sipguard handoff` both parse with
`parse_request` and hand over with `request_handoff`, so they cannot drift apart.
"""

from __future__ import annotations

from sipguard.handoffs.request import parse_request
from sipguard.handoffs.service import GroupClosed, TransferRefused, request_handoff

__all__ = ["GroupClosed", "TransferRefused", "parse_request", "request_handoff"]
