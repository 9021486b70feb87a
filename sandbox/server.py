"""The sandbox's web edge: Plivo's REST paths and JSON shapes, and the sandbox's own controls.

REST (`/v1/Account/{auth_id}/...`, Basic auth with the auth ID and token) is what the project's
sipguard/plivo/api.py speaks to api.plivo.com (docs/plivo.md, REST API), so pointing
PLIVO_API_URL here changes nothing else.
Controls (`/sandbox/...`, same Basic auth) play the other side: a SIP caller's INVITE (with a
real 407 digest exchange over Proxy-Authenticate / Proxy-Authorization), the clock, timelines,
and a caller hanging up.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import uuid
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from sandbox.account import ApiError, page
from sandbox.engine import Sandbox
from sandbox.sip_edge import Invite
from sipguard.errors import ValidationError

PROXY_AUTHENTICATE = "Proxy-Authenticate"
PROXY_AUTHORIZATION = "Proxy-Authorization"
MAX_WAIT_SECONDS = 60.0


def _api_id() -> str:
    return str(uuid.uuid4())


def _reply(status: int, body: dict[str, Any] | None = None) -> Response:
    if status == 204:
        return Response(status=204)
    response = jsonify({"api_id": _api_id(), **(body or {})})
    response.status_code = status
    return response


def _fields() -> dict[str, Any]:
    """The request's parameters: a JSON object (what sipguard.plivo.api sends) or a form."""
    if request.is_json:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise ApiError(400, "the body must be a JSON object")
        return data
    return request.form.to_dict()


def create_sandbox_app(sandbox: Sandbox, auth_token: str) -> Flask:
    """Build the sandbox's Flask app around a Sandbox."""
    app = Flask("sandbox", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    account = sandbox.account
    expected = f"{account.auth_id}:{auth_token}".encode()

    @app.before_request
    def authenticate() -> Response | None:
        if request.path == "/sandbox/healthz":
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        basic = scheme.lower() == "basic"  # auth schemes are case-insensitive (RFC 9110)
        try:
            given = base64.b64decode(encoded, validate=True) if basic else b""
        except (binascii.Error, ValueError):
            given = b""
        if not hmac.compare_digest(given, expected):
            response = _reply(401, {"error": "authentication failed: check auth ID and token"})
            response.headers["WWW-Authenticate"] = 'Basic realm="Plivo sandbox"'
            return response
        parts = request.path.split("/")
        # Plivo's pages are silent here (docs/plivo.md, Where Plivo is silent): another
        # account's id in the path is refused as Plivo refuses bad auth.
        if request.path.startswith("/v1/Account/") and parts[3] != account.auth_id:
            return _reply(401, {"error": "the auth ID in the path is not this account's"})
        return None

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        return _reply(exc.status, {"error": exc.error})

    @app.errorhandler(ValidationError)
    def invalid(exc: ValidationError) -> Response:
        return _reply(400, {"error": exc.message})

    @app.errorhandler(LookupError)
    def missing(exc: LookupError) -> Response:
        return _reply(404, {"error": str(exc.args[0]) if exc.args else "not found"})

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return _reply(exc.code or 500, {"error": exc.description or exc.name})

    root = "/v1/Account/<auth_id>/"

    def route(path: str, methods: list[str]) -> Callable[[Callable[..., Response]], Any]:
        def register(view: Callable[..., Response]) -> Any:
            def bound(auth_id: str, **kwargs: str) -> Response:
                return view(**kwargs)

            bound.__name__ = view.__name__
            return app.route(root + path, methods=methods)(bound)

        return register

    # -- credentials ----------------------------------------------------------------------------

    @route("SipAuth/Credential/", ["GET", "POST"])
    def credentials() -> Response:
        if request.method == "POST":
            created = account.create_credential(_fields())
            return _reply(201, {"message": "created", **account.credential_json(created)})
        with account.lock:
            items = [account.credential_json(c) for c in account.credentials.values()]
        return _reply(200, page(items, request.path, *_paging()))

    @route("SipAuth/Credential/<uuid>/", ["GET", "POST", "DELETE"])
    def credential(uuid: str) -> Response:
        if request.method == "DELETE":
            account.delete_credential(uuid)
            return _reply(204)
        if request.method == "POST":
            changed = account.update_credential(uuid, _fields())
            return _reply(202, {"message": "changed", **account.credential_json(changed)})
        return _reply(200, account.credential_json(account.credential(uuid)))

    # -- IP ACLs --------------------------------------------------------------------------------

    @route("SipAuth/IpAccessControlList/", ["GET", "POST"])
    def acls() -> Response:
        if request.method == "POST":
            created = account.create_acl(_fields())
            return _reply(201, {"message": "created", **account.acl_json(created)})
        with account.lock:
            items = [account.acl_json(a) for a in account.acls.values()]
        return _reply(200, page(items, request.path, *_paging()))

    @route("SipAuth/IpAccessControlList/<uuid>/", ["GET", "DELETE"])
    def acl(uuid: str) -> Response:
        if request.method == "DELETE":
            account.delete_acl(uuid)
            return _reply(204)
        return _reply(200, account.acl_json(account.acl(uuid)))

    @route("SipAuth/IpAccessControlList/<acl_uuid>/Entry/", ["GET", "POST"])
    def entries(acl_uuid: str) -> Response:
        if request.method == "POST":
            created = account.add_entry(acl_uuid, _fields())
            acl = account.acl(acl_uuid)
            return _reply(201, {"message": "created", **account.entry_json(acl, created)})
        with account.lock:
            acl = account.acl(acl_uuid)
            items = [account.entry_json(acl, e) for e in acl.entries.values()]
        return _reply(200, page(items, request.path, *_paging()))

    @route("SipAuth/IpAccessControlList/<acl_uuid>/Entry/<uuid>/", ["GET", "DELETE"])
    def entry(acl_uuid: str, uuid: str) -> Response:
        if request.method == "DELETE":
            account.remove_entry(acl_uuid, uuid)
            return _reply(204)
        return _reply(200, account.entry_json(account.acl(acl_uuid), account.entry(acl_uuid, uuid)))

    # -- applications ---------------------------------------------------------------------------

    @route("Application/", ["GET", "POST"])
    def applications() -> Response:
        if request.method == "POST":
            app_id = account.create_application(_fields())
            return _reply(201, {"message": "created", "app_id": app_id})
        with account.lock:
            items = [account.application_json(a) for a in account.applications.values()]
        return _reply(200, page(items, request.path, *_paging()))

    @route("Application/<app_id>/", ["GET", "POST", "DELETE"])
    def application(app_id: str) -> Response:
        if request.method == "DELETE":
            account.delete_application(app_id)
            return _reply(204)
        if request.method == "POST":
            account.update_application(app_id, _fields())
            return _reply(202, {"message": "changed"})
        return _reply(200, account.application_json(account.application(app_id)))

    # -- calls ----------------------------------------------------------------------------------

    @route("Call/", ["POST"])
    def make_call() -> Response:
        uuids = sandbox.make_call(_fields())
        # Plivo's pages are silent on the status Make Call answers with (docs/plivo.md, Where
        # Plivo is silent): 201 "call fired".
        request_uuid: str | list[str] = uuids[0] if len(uuids) == 1 else uuids
        return _reply(201, {"message": "call fired", "request_uuid": request_uuid})

    @route("Call/<call_uuid>/", ["POST"])
    def transfer(call_uuid: str) -> Response:
        sandbox.transfer(call_uuid, _fields())
        return _reply(202, {"message": "call transferred"})

    # -- the sandbox's own controls -------------------------------------------------------------

    @app.get("/sandbox/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok"})

    @app.post("/sandbox/invite")
    def invite() -> Response:
        fields = _fields()
        for key in ("source_ip", "request_uri"):
            if not isinstance(fields.get(key), str) or not fields[key]:
                raise ApiError(400, f"{key} is required")
        optional = {
            key: value if isinstance(value, str) and value else None
            for key in ("from", "to", "caller_name")
            for value in [fields.get(key)]
        }
        invite = Invite(
            source_ip=fields["source_ip"],
            request_uri=fields["request_uri"],
            from_=optional["from"],
            to=optional["to"],
            caller_name=optional["caller_name"],
            authorization=request.headers.get(PROXY_AUTHORIZATION),
        )
        problem = invite.problem()
        if problem is not None:
            raise ApiError(400, problem)
        result = sandbox.invite(invite)
        body: dict[str, Any] = {
            "status": result.status,
            "reason": result.reason,
            "call_uuid": result.call_uuid,
        }
        if result.call_uuid is not None:
            body["call"] = sandbox.calls[result.call_uuid].summary()
        response = _reply(result.status, body)
        if result.challenge is not None:
            response.headers[PROXY_AUTHENTICATE] = result.challenge
        return response

    @app.get("/sandbox/calls")
    def calls() -> Response:
        found = [call.head() for call in list(sandbox.calls.values())]
        return jsonify({"calls": found})

    @app.get("/sandbox/calls/<call_uuid>")
    def call(call_uuid: str) -> Response:
        wait = request.args.get("wait", "0")
        try:
            seconds = min(max(float(wait), 0.0), MAX_WAIT_SECONDS)
        except ValueError:
            raise ApiError(400, "wait must be a number of seconds") from None
        found = sandbox.wait(call_uuid, seconds)
        return jsonify(found.summary())

    @app.post("/sandbox/calls/<call_uuid>/hangup")
    def hangup(call_uuid: str) -> Response:
        found = sandbox.hang_up(call_uuid)
        return jsonify(found.summary())

    @app.route("/sandbox/clock", methods=["GET", "POST"])
    def clock() -> Response:
        if request.method == "POST":
            advance = _fields().get("advance")
            if isinstance(advance, bool) or not isinstance(advance, int | float):
                raise ApiError(400, "advance must be a number of seconds")
            try:
                sandbox.clock.advance(float(advance))
            except (ValueError, OverflowError) as exc:
                raise ApiError(400, str(exc)) from None
        return jsonify({"now": sandbox.clock.now().isoformat()})

    @app.get("/sandbox/lockouts")
    def lockouts() -> Response:
        found = [
            {"ip": lock.ip, "since": lock.started.isoformat(), "until": lock.until.isoformat()}
            for lock in sandbox.lockouts()
        ]
        return jsonify({"lockouts": found})

    return app


def _paging() -> tuple[Any, Any]:
    return request.args.get("limit"), request.args.get("offset")
