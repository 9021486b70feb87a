"""In-process micro-benchmarks (no server): our XML and verifier against the plivo SDK's."""

from __future__ import annotations

import timeit
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from lxml import etree
from plivo.utils import validate_v3_signature

from bench import workload
from bench.bare_app import bare_lxml_dial
from bench.sdk_app import build_dial
from sipguard.calls.signature import Keyring
from xml_builders import dial, response, to_bytes, user


@dataclass(frozen=True)
class Comparison:
    """Per-call time of ours and of the SDK's way of doing the same thing."""

    name: str
    ours_us: float
    sdk_us: float

    @property
    def speedup(self) -> float:
        """Return how many times faster ours is (SDK time / our time)."""
        return self.sdk_us / self.ours_us


def per_call_us(fn: Callable[[], Any], budget: float = 0.4, repeat: int = 5) -> float:
    """Return the best per-call time of `fn` in microseconds over `repeat` timed batches."""
    timer = timeit.Timer(fn)
    number, elapsed = timer.autorange()
    number = max(1, int(number * budget / max(elapsed, 1e-9)))
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e6


def our_dial() -> bytes:
    """Build the bench's <Dial> with xml_builders and serialise it with to_bytes."""
    return to_bytes(
        response(
            dial(
                [
                    user(
                        workload.AGENT_URI,
                        sip_auth_username=workload.AGENT_USERNAME,
                        sip_auth_password=workload.AGENT_PASSWORD,
                    )
                ],
                action=workload.DIAL_ACTION,
                method="POST",
                timeout=workload.DIAL_TIMEOUT,
                caller_id=workload.DIAL_CALLER_ID,
                caller_name=workload.DIAL_CALLER_NAME,
                redirect=True,
            )
        )
    )


def app_dial() -> Comparison:
    """Compare the app's own path to the same <Dial> (sipguard.calls.documents.dial_group, which
    builds a group's plain Dial once and copies it per call) + to_bytes with plivoxml's."""
    from sipguard.calls import documents
    from sipguard.calls.voice_config import load_voice_config

    voice = load_voice_config(workload.VOICE_CONFIG, workload.AGENT_PASSWORDS)
    group = voice.groups["support"]

    def ours() -> bytes:
        return to_bytes(documents.dial_group(group, 0, workload.DIAL_ACTION))

    if tree(ours()) != tree(our_dial()):
        raise RuntimeError("the app's Dial is not the bench's Dial")
    return Comparison("XML, app path: dial_group", per_call_us(ours), per_call_us(build_dial))


def tree(document: bytes) -> Any:
    """Return a comparable form of an XML document: tags, attributes, texts, in order."""

    def walk(e: Any) -> Any:
        return (e.tag, sorted(e.attrib.items()), (e.text or "").strip(), [walk(c) for c in e])

    return walk(etree.fromstring(document))


def xml() -> tuple[Comparison, Comparison, Comparison, bool]:
    """Compare building + serialising the <Dial>: compact and pretty SDK output, and the
    ceiling (bare lxml, no checks) against the same SDK output."""
    same = tree(our_dial()) == tree(build_dial().encode()) == tree(bare_lxml_dial())
    ours = per_call_us(our_dial)
    sdk = per_call_us(build_dial)
    compact = Comparison("XML build+serialise", ours, sdk)
    pretty = Comparison(
        "XML vs to_string() pretty", ours, per_call_us(lambda: build_dial(pretty=True))
    )
    ceiling = Comparison("XML ceiling: bare lxml", per_call_us(bare_lxml_dial), sdk)
    return compact, pretty, ceiling, same


def verify() -> Comparison:
    """Compare verifying one signed /answer callback: Keyring.verify vs validate_v3_signature."""
    token = workload.new_token()
    form = workload.answer_form("micro-call-1")
    request = workload.sign(token, "/answer", form, "micro-nonce-1")
    url = workload.PUBLIC_BASE_URL + request.path
    params = {key: [value] for key, value in form.items()}
    headers = request.headers()
    keyring = Keyring([token])

    def ours() -> object:
        return keyring.verify(headers, "POST", url, params)

    def sdk() -> object:
        return validate_v3_signature("POST", url, request.nonce, token, request.signature, form)

    if not (ours() and sdk()):
        raise RuntimeError("micro-benchmark request does not verify")
    return Comparison("V3 verification", per_call_us(ours), per_call_us(sdk))


def store_record_us(database_url: str) -> float:
    """Return the in-process cost of Store.record (nonce claim + one answer event) in µs."""
    from sipguard.store import CallEvent, Store

    store = Store(database_url)
    try:
        store.upgrade()
        counter = iter(range(10**9))

        def once() -> None:
            n = next(counter)
            store.record(
                nonce=f"micro-{n}",
                nonce_ttl=timedelta(minutes=10),
                events=[CallEvent(route="answer", call_uuid=f"call-{n}", decision="dial:support")],
            )

        return per_call_us(once, budget=0.3, repeat=3)
    finally:
        store.dispose()
