"""Scenario (a): a bare Flask app answering every POST /answer with one constant <Dial>.

The floor the real app is compared with: no signature check, no routing, no database, the XML
serialised once at import. Served by gunicorn as ``bench.bare_app:create_app()``.
"""

from __future__ import annotations

from flask import Flask, Response
from lxml import etree

from bench import workload


def bare_lxml_dial() -> bytes:
    """Build and serialise the bench's <Dial> with lxml directly, with no checks at all.

    (a) serves it once-built; the micro-benchmarks time it as the ceiling for lxml builders.
    """
    root = etree.Element("Response")
    dial = etree.SubElement(
        root,
        "Dial",
        action=workload.DIAL_ACTION,
        method="POST",
        timeout=str(workload.DIAL_TIMEOUT),
        callerId=workload.DIAL_CALLER_ID,
        callerName=workload.DIAL_CALLER_NAME,
        redirect="true",
    )
    user = etree.SubElement(
        dial,
        "User",
        sipAuthUsername=workload.AGENT_USERNAME,
        sipAuthPassword=workload.AGENT_PASSWORD,
    )
    user.text = workload.AGENT_URI
    return bytes(etree.tostring(root, encoding="UTF-8", xml_declaration=True))


DIAL_XML = bare_lxml_dial()


def create_app() -> Flask:
    """Build the app: POST /answer returns the constant XML, GET /healthz says ok."""
    app = Flask(__name__, static_folder=None)

    @app.post("/answer")
    def answer() -> Response:
        return Response(DIAL_XML, mimetype="application/xml")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok\n", mimetype="text/plain")

    return app
