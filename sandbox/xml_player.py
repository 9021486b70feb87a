"""The XML player: run the application's Plivo XML for a call, one document after another.

Speak, Wait and Record take simulated time; Hangup ends the call; Redirect, a Record action and
a Dial action lead to the next document; Dial rings its <User>/<Number>s at once (`legs`) and
the first to answer is bridged. Other Plivo verbs are noted and passed over; anything else, and
any URL, method or credential pair Plivo would refuse, makes the document invalid (docs/plivo.md,
XML). A URL of the simulated AI agent (config `ai_urls`) leaves the call waiting there.

A Dial's `sipHeaders` (on <Dial> and on each <User>/<Number>) become the INVITE's X-PH-*
headers, minus those Plivo drops. `confirmSound` is fetched for each agent who answers and what
the agent hears is noted; with `confirmKey`, the agent who presses it (config `confirm`) is
bridged and one who does not is dropped after `confirmTimeout`
(https://www.plivo.com/docs/voice/xml/dial, https://www.plivo.com/docs/voice/xml/dial/user).
A Dial's `callbackUrl` hears each leg's answer, bridge and hangup, in sandbox-time order
(`dial_events`).

The player never ends a call itself: `play` returns how the call ends, or None while the AI
agent holds it, and the call core sends the hangup. Documents are fetched, and their callbacks
signed and sent, by callback delivery (`callbacks`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from lxml import etree

from sandbox.call import MAX_CALL_SECONDS, Call, Ending
from sandbox.callbacks import FETCH_CODES, Callbacks, Fetch
from sandbox.config import SandboxConfig
from sandbox.dial_events import DialEvents
from sandbox.legs import Leg, Legs
from sandbox.timeline import Event, SandboxClock, safe_address, safe_url
from sipguard.calls.forms import whole_number
from sipguard.errors import ValidationError
from xml_builders import check_sip_credentials, check_url

# Plivo verbs the sandbox does not play out: noted in the timeline and passed over.
OTHER_VERBS = frozenset(
    {"Conference", "DTMF", "GetDigits", "GetInput", "Message", "MultiPartyCall", "Play",
     "PreAnswer", "Stream"}
)  # fmt: skip
# <Dial> attributes the sandbox reads past: no music, no digit matching (so no `digits`
# callbackUrl event).
DIAL_NOT_SIMULATED = ("dialMusic", "digitsMatch", "digitsMatchBLeg", "hangupOnStar")
# The only verbs a confirmSound document may use; Plivo ignores the others
# (https://www.plivo.com/docs/voice/xml/dial).
CONFIRM_VERBS = frozenset({"Play", "Speak", "Wait"})
CONFIRM_TIMEOUT = 120.0  # confirmTimeout's default (https://www.plivo.com/docs/voice/xml/dial)
KEY_DELAY = 1.0  # how long a simulated agent takes to press the key once the prompt ends
_CONFIRM_KEY = re.compile(r"[0-9*#]")
# sipHeaders Plivo sends (docs/plivo.md, XML, sipHeaders): a name of letters and digits, at most
# 24; a value of letters, digits and %, at most 120; no reserved name. Others are dropped
# without a word, as Plivo drops them.
_HEADER_NAME = re.compile(r"[A-Za-z0-9]{1,24}")
_HEADER_VALUE = re.compile(r"[A-Za-z0-9%]{1,120}")
_RESERVED_PREFIXES = ("ph-", "plivo", "fs-", "sipauth", "zt-", "twilio")
_RESERVED_NAMES = ("clientregion",)
_UNPRINTABLE = re.compile(r"[^\x21-\x7e]")
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


@dataclass(frozen=True)
class Confirm:
    """A Dial's confirm prompt: the XML played to an agent on answer, the key that takes it."""

    sound: str | None
    key: str | None
    timeout: float


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
        callback = _optional_url("Dial callbackUrl", element.get("callbackUrl"))
        callback_method = _xml_method(element.get("callbackMethod"))
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
        confirm = _confirm(call, element)
        dial_headers, dial_dropped = sip_headers(element.get("sipHeaders"))
        legs = []
        for child in children:
            own_headers, own_dropped = sip_headers(child.get("sipHeaders"))
            legs.append(
                self._legs.ring(
                    (child.text or "").strip(),
                    child.get("sipAuthUsername"),
                    child.get("sipAuthPassword"),
                    ring,
                    at=call.offset,
                    # Plivo's pages are silent here (docs/plivo.md, Where Plivo is silent): the
                    # <User>'s own header wins over the <Dial>'s of the same name.
                    headers={**dial_headers, **own_headers},
                    dropped=(*dial_dropped, *own_dropped),
                )
            )
        first_event = len(call.events)
        caller_id = element.get("callerId")
        events = DialEvents(
            self._callbacks, call, callback, callback_method, caller_id or call.from_
        )
        winner, bridged_at, unconfirmed = self._confirmed(call, legs, confirm, caller_id, events)
        pressed = confirm.sound is not None and confirm.key is not None
        for leg in legs:
            # Whoever is still ringing, or still on the line unconfirmed, is cancelled.
            if (
                winner is not None
                and leg is not winner
                and (leg.outcome == "answered" or leg.at >= bridged_at)
            ):
                reason = (
                    "another agent pressed the key first"
                    if pressed
                    else ("another endpoint answered first")
                )
                leg.outcome, leg.at, leg.cause, leg.code = "cancelled", bridged_at, "Canceled", 1000
                leg.steps.append(f"cancelled: {reason}")
        for leg in unconfirmed:
            if leg.outcome == "no-answer":  # not cancelled before its time ran out
                waited = f"confirmTimeout {confirm.timeout:g} s"
                leg.steps.append(f"never pressed {confirm.key}; dropped after {waited}")
        if winner is not None:
            events.hangups(legs, before=bridged_at)
            events.connected(winner, bridged_at)
        events.hangups(legs)  # the cancelled legs, or every leg of a Dial nobody took
        call.events.extend(leg.event() for leg in legs)
        # The timeline in time order: legs, confirm prompts and their fetches interleave.
        call.events[first_event:] = sorted(call.events[first_event:], key=lambda e: e.offset)
        if winner is not None:
            if call.answered_at is None:
                call.answered_at = winner.at
            cap = _seconds(element.get("timeLimit"), 0)
            talk = min(winner.talk, cap) if cap else winner.talk
            call.offset = bridged_at + talk
            status, cause, b_leg = "completed", "Normal Hangup", winner.uuid
            call.note("bridge", f"talked {talk:g} s with {safe_address(winner.address)}; hung up")
            # timeLimit cuts the bridge on Plivo's side; otherwise the agent hangs up.
            source = "Plivo" if talk < winner.talk else "Callee"
            events.hangup(winner, call.offset, "Normal Hangup", 4000, source)
        elif legs:
            last = max(legs, key=lambda leg: leg.at)
            # Plivo's pages are silent on a Dial of several endpoints that all fail (docs/plivo.md,
            # Where Plivo is silent): the Dial ends when the last leg does, and reports that leg's
            # status and cause.
            call.offset = last.at
            status, cause, b_leg = last.dial_status, last.cause or "", ""
        else:
            status, cause, b_leg = "failed", "Invalid Destination Address", ""
        for leg in legs:
            # A leg answered over real SIP hangs up when it ends: the bridged one after its
            # talk, a cancelled or unconfirmed one when it was dropped.
            said = leg.hang_up()
            if said is not None:
                at = call.offset if leg is winner else leg.at
                shown = safe_address(leg.address)
                call.events.append(Event(at, "bye", f"{shown}: {said}", {"leg_uuid": leg.uuid}))
        call.events[first_event:] = sorted(call.events[first_event:], key=lambda e: e.offset)
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

    def _confirmed(
        self,
        call: Call,
        legs: list[Leg],
        confirm: Confirm,
        caller_id: str | None,
        events: DialEvents,
    ) -> tuple[Leg | None, float, list[Leg]]:
        """Play the confirm prompt to each agent who answers, in answer order, until one is
        bridged; return the bridged leg, when it was bridged, and the legs that did not press
        the key."""
        winner, bridged_at = None, float("inf")
        unconfirmed: list[Leg] = []
        for leg in sorted((leg for leg in legs if leg.outcome == "answered"), key=lambda g: g.at):
            if leg.at >= bridged_at:
                break  # the caller is already with another agent: this leg is cancelled
            # Legs that ended before this answer have ended for good: the bridge, if any, is
            # later still.
            events.hangups(legs, before=leg.at)
            events.answer(leg)
            heard = self._whisper(call, leg, confirm, caller_id)
            if confirm.sound is None or confirm.key is None:
                at = heard
            elif leg.confirm == "accept" and heard + KEY_DELAY <= leg.at + confirm.timeout:
                at = heard + KEY_DELAY
                leg.steps.append(f"pressed {confirm.key}")
            else:
                # Plivo's pages are silent here (docs/plivo.md, Where Plivo is silent): an agent
                # who never presses the key is dropped when confirmTimeout (counted from the
                # answer) runs out, and counts as not answering.
                leg.outcome, leg.cause = "no-answer", "No Answer"
                leg.at += confirm.timeout
                unconfirmed.append(leg)
                continue
            if at < bridged_at:
                winner, bridged_at = leg, at
        if winner is not None and bridged_at > winner.at:
            call.events.append(
                Event(
                    bridged_at,
                    "confirm",
                    f"{safe_address(winner.address)} took the call; bridged",
                    {"leg_uuid": winner.uuid},
                )
            )
        return winner, bridged_at, unconfirmed

    def _whisper(self, call: Call, leg: Leg, confirm: Confirm, caller_id: str | None) -> float:
        """Fetch the confirmSound for an agent who answered and note what the agent heard;
        return the call offset at which the prompt ended."""
        if confirm.sound is None:
            return leg.at
        shown = safe_address(leg.address)
        # Plivo's pages are silent on what confirmSound receives (docs/plivo.md, Where Plivo is
        # silent): the B leg's standard parameters, and its X-PH-* headers as every request
        # for the dialled leg carries them.
        params = {
            **self._callbacks.b_leg_params(call, leg.uuid, caller_id or call.from_, leg.address),
            **leg.headers,
        }
        resumed = call.offset
        call.offset = leg.at  # the fetch and its notes happen when the agent answers
        try:
            answer = self._callbacks.send(call, "confirmSound", confirm.sound, "POST", params)
            root = None
            if answer is not None and 200 <= answer.status < 300:
                root = _parse_xml(answer.body)
            if root is None:
                # Plivo's pages are silent here (docs/plivo.md, Where Plivo is silent): the
                # agent hears nothing, and the call goes on as if the prompt had played.
                call.note("confirm", f"{shown} heard nothing (no confirmSound XML)", heard=[])
                leg.steps.append("heard no confirmSound")
                return leg.at
            heard, seconds = _prompt(call, root)
        finally:
            call.offset = resumed
        said = " / ".join(heard) if heard else "nothing"
        call.events.append(
            Event(
                leg.at,
                "confirm",
                f"{shown} heard: {said}",
                {"leg_uuid": leg.uuid, "heard": heard},
            )
        )
        leg.steps.append(f"heard the confirmSound ({seconds:g} s)")
        return leg.at + seconds


def sip_headers(raw: str | None) -> tuple[dict[str, str], tuple[str, ...]]:
    """Read a sipHeaders attribute (``k=v,k2=v2``): the X-PH-* headers Plivo sends, and the
    names of those it drops."""
    sent: dict[str, str] = {}
    dropped: list[str] = []
    for item in (raw or "").split(","):
        if not item:
            continue
        name, equals, value = item.partition("=")
        lowered = name.lower()
        if (
            not equals
            or not _HEADER_NAME.fullmatch(name)
            or not _HEADER_VALUE.fullmatch(value)
            or lowered.startswith(_RESERVED_PREFIXES)
            or lowered in _RESERVED_NAMES
        ):
            dropped.append(_UNPRINTABLE.sub("?", name[:30]) or "(empty)")
            continue
        # "X-PH-" then the name with its first letter upper-cased and the rest lower-cased.
        sent[f"X-PH-{name[0].upper()}{name[1:].lower()}"] = value
    return sent, tuple(dropped)


def _confirm(call: Call, element: etree._Element) -> Confirm:
    """Read a Dial's confirmSound, confirmKey and confirmTimeout."""
    sound = _optional_url("Dial confirmSound", element.get("confirmSound"))
    key = element.get("confirmKey")
    if key is not None and not _CONFIRM_KEY.fullmatch(key):
        raise InvalidXML("Dial confirmKey must be one of 0-9, * or #")
    if key is not None and sound is None:
        # "confirmSound ... is required for confirmKey to work" (the Dial page).
        call.note("dial", "confirmKey without confirmSound: no key is asked for")
        key = None
    timeout = _seconds(element.get("confirmTimeout"), CONFIRM_TIMEOUT) or CONFIRM_TIMEOUT
    return Confirm(sound, key, timeout)


def _prompt(call: Call, root: etree._Element) -> tuple[list[str], float]:
    """Play a confirmSound document to the agent: the texts heard, and how long it took."""
    heard: list[str] = []
    seconds = 0.0
    for element in root:
        if not isinstance(element.tag, str):
            continue
        if element.tag == "Speak":
            text = " ".join((element.text or "").split())
            heard.append(text)
            seconds += max(1.0, len(text.split()) / SPEAK_WORDS_PER_SECOND)
        elif element.tag == "Wait":
            seconds += _seconds(element.get("length"), 1)
        elif element.tag == "Play":
            heard.append(f"[audio {safe_url((element.text or '').strip())}]")
        else:
            # Only Play, Speak and Wait are honoured; Plivo ignores the rest (the Dial page).
            call.note("confirm", f"<{element.tag}> in confirmSound is ignored")
    return heard, seconds


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
