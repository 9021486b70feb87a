"""The XML player: run the application's Plivo XML for a call, one document after another.

Speak, Wait and Record take simulated time; Hangup ends the call; Redirect, a Record action and
a Dial action lead to the next document; Dial rings its <User>/<Number>s at once (`legs`) and
the first to answer is bridged. Other Plivo verbs are noted and passed over; anything else, and
any URL, method or credential pair Plivo would refuse, makes the document invalid (docs/plivo.md,
XML). A URL of the simulated AI agent (config `ai_urls`) leaves the call waiting there.

The player never ends a call itself: `play` returns how the call ends, or None while the AI
agent holds it, and the call core sends the hangup. Documents are fetched, and their callbacks
signed and sent, by callback delivery (`callbacks`).
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from lxml import etree

from sandbox.call import MAX_CALL_SECONDS, Call, Ending
from sandbox.callbacks import FETCH_CODES, Callbacks, Fetch
from sandbox.config import SandboxConfig
from sandbox.legs import Legs
from sandbox.timeline import SandboxClock, safe_address, safe_url
from sipguard.calls.forms import whole_number
from sipguard.errors import ValidationError
from xml_builders import check_sip_credentials, check_url

# Plivo verbs the sandbox does not play out: noted in the timeline and passed over.
OTHER_VERBS = frozenset(
    {"Conference", "DTMF", "GetDigits", "GetInput", "Message", "MultiPartyCall", "Play",
     "PreAnswer", "Stream"}
)  # fmt: skip
# <Dial> attributes the sandbox reads past: no DialAction callbacks to callbackUrl, no confirm
# prompt (every agent confirms), no music, no digit matching.
DIAL_NOT_SIMULATED = (
    "callbackUrl", "confirmSound", "confirmKey", "dialMusic", "digitsMatch", "digitsMatchBLeg",
    "hangupOnStar",
)  # fmt: skip
# Plivo's pages are silent here (docs/plivo.md, Where Plivo is silent): a redirect loop ends as
# "Loop Detected" after 100 documents.
MAX_DOCUMENTS = 100
MAX_XML_BYTES = 100_000  # the most a document may hold (docs/plivo.md, XML)
SPEAK_WORDS_PER_SECOND = 2.5
_XML_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
# Attributes never shown: SIP credentials are never in CDRs or callbacks (docs/plivo.md, SIP
# authentication), nor in the timeline.
_HIDDEN = {"sipAuthUsername", "sipAuthPassword"}


class InvalidXML(Exception):
    """Something in a document Plivo would refuse; the call ends 8011-8014."""


class Player:
    """Run a call's XML against the simulated world until the call ends or waits."""

    def __init__(
        self,
        config: SandboxConfig,
        clock: SandboxClock,
        callbacks: Callbacks,
        legs: Legs,
        new_uuid: Callable[[], str],
    ) -> None:
        self._config = config
        self._clock = clock
        self._callbacks = callbacks
        self._legs = legs
        self._new_uuid = new_uuid

    def play(self, call: Call, step: Fetch) -> Ending | None:
        """Fetch XML and run it, then whatever it leads to; return how the call ends, or None
        when the AI agent holds it."""
        outcome: Fetch | Ending | None = step
        while isinstance(outcome, Fetch):
            call.documents += 1
            if call.documents > MAX_DOCUMENTS:
                return Ending(2060, "failed", "Plivo")
            if self._is_ai(outcome.url):
                self._park(call, outcome.url)
                return None
            root = self._document(call, outcome)
            if isinstance(root, Ending):
                return root
            outcome = self._execute(call, root, outcome.kind)
        return outcome if outcome is not None else Ending(4010, "completed", "Plivo")

    def _is_ai(self, url: str) -> bool:
        return any(url.startswith(prefix) for prefix in self._config.ai_urls)

    def _park(self, call: Call, url: str) -> None:
        """The simulated AI agent takes the call and holds it until a Transfer or a hangup."""
        call.answer()
        handoff = "handoff_url=" in urlsplit(url).query
        call.note(
            "ai",
            f"AI agent at {safe_url(url)} has the call"
            + (" (it was given a handoff_url)" if handoff else "")
            + "; waiting for a Transfer or a hangup",
            url=safe_url(url),
            handoff_url=handoff,
        )
        call.park(self._clock.now())

    def _document(self, call: Call, step: Fetch) -> etree._Element | Ending:
        """Fetch and read one document; say how the call ends when it cannot be run."""
        body = self._callbacks.fetch(call, step)
        if isinstance(body, Ending):
            return body
        root = _parse_xml(body)
        if root is None:
            call.note("xml", "the answer is not a Plivo <Response> document")
            return Ending(FETCH_CODES[step.kind].invalid, "failed", "Error")
        call.note("xml", describe(root))
        return root

    def _execute(self, call: Call, root: etree._Element, kind: str) -> Fetch | Ending | None:
        """Run a <Response>; return the next document, how the call ends, or None (run out)."""
        try:
            return self._run_verbs(call, root)
        except InvalidXML as exc:
            # A URL, method or credential pair Plivo would refuse: the document is invalid.
            call.note("xml", f"invalid XML: {exc}")
            return Ending(FETCH_CODES[kind].invalid, "failed", "Error")

    def _run_verbs(self, call: Call, root: etree._Element) -> Fetch | Ending | None:
        for element in root:
            if not isinstance(element.tag, str):
                continue  # an XML comment or processing instruction
            tag = element.tag
            if tag != "Hangup":
                call.answer()
            if tag == "Speak":
                words = len((element.text or "").split())
                call.offset += max(1.0, words / SPEAK_WORDS_PER_SECOND)
                call.note("speak", f"said {words} word(s)")
            elif tag == "Wait":
                call.offset += _seconds(element.get("length"), 1)
                call.note("wait", "waited")
            elif tag == "Hangup":
                return _hangup_verb(call, element)
            elif tag == "Redirect":
                url = _xml_url("Redirect", (element.text or "").strip())
                return Fetch(url, _xml_method(element.get("method")), "redirect")
            elif tag == "Record":
                step = self._record(call, element)
                if step is not None:
                    return step
            elif tag == "Dial":
                step = self._dial(call, element)
                if step is not None:
                    return step
            elif tag in OTHER_VERBS:
                call.note("xml", f"<{tag}> is not simulated by the sandbox; skipped")
            else:
                # Twilio's <Reject/>, say, is invalid answer XML (docs/plivo.md, XML).
                raise InvalidXML(f"<{tag}> is not a Plivo verb")
        return None

    def _record(self, call: Call, element: etree._Element) -> Fetch | None:
        callback = _optional_url("Record callbackUrl", element.get("callbackUrl"))
        callback_method = _xml_method(element.get("callbackMethod"))
        action = _optional_url("Record action", element.get("action"))
        method = _xml_method(element.get("method"))
        seconds = min(_seconds(element.get("maxLength"), 60), self._config.message_seconds)
        recording = self._new_uuid()
        call.offset += seconds
        call.note("record", f"recorded a {seconds:g} s message (simulated caller)")
        params = {
            "RecordUrl": f"https://sandbox.invalid/recordings/{recording}.mp3",
            "RecordingID": recording,
            "RecordingDuration": str(int(seconds)),
            "RecordingDurationMs": str(int(seconds * 1000)),
        }
        if callback:
            self._callbacks.notify(call, "recording", callback, callback_method, params)
        return Fetch(action, method, "action", params) if action else None

    def _dial(self, call: Call, element: etree._Element) -> Fetch | None:
        """Ring every <User>/<Number> at once; the first to answer wins (docs/plivo.md, XML)."""
        children = [c for c in element if c.tag in ("User", "Number")]
        action = _optional_url("Dial action", element.get("action"))
        method = _xml_method(element.get("method"))
        for child in children:
            try:
                check_sip_credentials(
                    ("sipAuthUsername", "sipAuthPassword"),
                    child.get("sipAuthUsername"),
                    child.get("sipAuthPassword"),
                )
            except ValidationError as exc:
                raise InvalidXML(f"<{child.tag}> {exc.message}") from None
        ring = _seconds(element.get("timeout"), 0) or None
        limit = f", timeout {ring:g}s" if ring else ""
        call.note("dial", f"Dial {len(children)} endpoint(s){limit}")
        skipped = [name for name in DIAL_NOT_SIMULATED if element.get(name)]
        if skipped:
            call.note("dial", f"not simulated: {', '.join(skipped)} (agents take the call as is)")
        legs = [
            self._legs.ring(
                (child.text or "").strip(),
                child.get("sipAuthUsername"),
                child.get("sipAuthPassword"),
                ring,
                at=call.offset,
            )
            for child in children
        ]
        answered = [leg for leg in legs if leg.outcome == "answered"]
        winner = min(answered, key=lambda leg: leg.at) if answered else None
        for leg in legs:
            if winner is not None and leg is not winner and leg.at >= winner.at:
                leg.outcome, leg.at, leg.cause, leg.code = "cancelled", winner.at, "Canceled", 1000
                leg.steps.append("cancelled: another endpoint answered first")
        for leg in sorted(legs, key=lambda leg: leg.at):  # the timeline in time order
            call.events.append(leg.event())
        if winner is not None:
            if call.answered_at is None:
                call.answered_at = winner.at
            cap = _seconds(element.get("timeLimit"), 0)
            talk = min(winner.talk, cap) if cap else winner.talk
            call.offset = winner.at + talk
            status, cause, b_leg = "completed", "Normal Hangup", winner.uuid
            call.note("bridge", f"talked {talk:g} s with {safe_address(winner.address)}; hung up")
        elif legs:
            last = max(legs, key=lambda leg: leg.at)
            # Plivo's pages are silent on a Dial of several endpoints that all fail (docs/plivo.md,
            # Where Plivo is silent): the Dial ends when the last leg does, and reports that leg's
            # status and cause.
            call.offset = last.at
            status, cause, b_leg = last.dial_status, last.cause or "", ""
        else:
            status, cause, b_leg = "failed", "Invalid Destination Address", ""
        call.note("dial", f"DialStatus={status} DialHangupCause={cause}", dial_status=status)
        if not action:
            return None
        params = {
            "DialStatus": status,
            # Plivo's pages are silent here (docs/plivo.md, Where Plivo is silent): a leg that
            # failed (auth, no such endpoint) never rang.
            "DialRingStatus": "true" if any(leg.outcome != "failed" for leg in legs) else "false",
            "DialHangupCause": cause,
            "DialALegUUID": call.uuid,
            "DialBLegUUID": b_leg,
        }
        if (element.get("redirect") or "true").lower() == "false":
            self._callbacks.notify(call, "action", action, method, params)
            return None
        return Fetch(action, method, "action", params)


def _hangup_verb(call: Call, element: etree._Element) -> Ending:
    """How a <Hangup> ends the call (docs/plivo.md, XML)."""
    reason = element.get("reason")
    # reason="rejected" is recorded as 3020, "busy" as 3010 (observed); a <Hangup/> before the
    # call was answered rejects it by default.
    if reason == "busy":
        return Ending(3010, "busy", "Answer XML")
    if reason == "rejected" or call.answered_at is None:
        return Ending(3020, "failed", "Answer XML")
    return Ending(4000, "completed", "Answer XML")


def _xml_url(where: str, value: str) -> str:
    try:
        return check_url(where, value)
    except ValidationError:
        raise InvalidXML(f"{where} is not an absolute http(s) URL") from None


def _optional_url(where: str, value: str | None) -> str | None:
    return _xml_url(where, value) if value else None


def _xml_method(value: str | None) -> str:
    method = (value or "POST").upper()
    if method not in ("GET", "POST"):
        raise InvalidXML("method must be GET or POST")
    return method


def _seconds(raw: str | None, default: float) -> float:
    """A duration attribute in whole seconds; unreadable means the default, huge is clamped."""
    value = whole_number((raw or "").strip())
    return default if value is None else float(min(value, MAX_CALL_SECONDS))


def _parse_xml(body: bytes) -> etree._Element | None:
    if len(body) > MAX_XML_BYTES:
        return None
    try:
        root = etree.fromstring(body, _XML_PARSER)
    except etree.XMLSyntaxError:
        return None
    return root if root.tag == "Response" else None


def describe(root: etree._Element) -> str:
    """Summarise a <Response> for the timeline: verbs, safe attributes, no credentials."""
    parts = []
    for element in root:
        if not isinstance(element.tag, str):
            continue
        if element.tag == "Dial":
            inner = []
            for child in element:
                if not isinstance(child.tag, str):
                    continue
                secret = " (with digest credentials)" if _HIDDEN & set(child.attrib) else ""
                inner.append(f"{child.tag} {(child.text or '').strip()}{secret}")
            parts.append(f"Dial[{', '.join(inner)}]")
        elif element.tag == "Redirect":
            parts.append(f"Redirect {safe_url((element.text or '').strip())}")
        elif element.tag == "Hangup" and element.get("reason"):
            parts.append(f"Hangup reason={element.get('reason')}")
        else:
            parts.append(element.tag)
    return "Response: " + (", ".join(parts) if parts else "(empty)")
