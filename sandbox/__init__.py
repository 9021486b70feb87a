"""A local stand-in for Plivo: REST API, inbound SIP auth, signed callbacks, XML, agents.

`flask sandbox serve` runs it on its own port; point PLIVO_API_URL at it and the project's REST
module and CLI work unchanged. `flask sandbox call` places an inbound call through it. Modules:
digest (RFC 2617/7616), account (REST resources and limits), config (the simulated world),
calls (the call engine), timeline, factory (a sandbox from the app's settings), server (the web
edge), client (its Python client), cli, demo. Nothing is imported here, so registering the CLI
costs the app nothing at start-up.
"""
