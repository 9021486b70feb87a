"""A local stand-in for Plivo: REST API, inbound SIP auth, signed callbacks, XML, agents.

`sipguard sandbox serve` runs it on its own port; point PLIVO_API_URL at it and the project's
REST module and CLI work unchanged. `sipguard sandbox call` places an inbound call through it.
Modules:
digest (RFC 2617/7616), account (REST resources and limits), config (the simulated world),
and the call engine: engine (the core: calls from INVITE or Make Call to hangup), call (one
call's state and timeline), sip_edge (whether an inbound INVITE is admitted: lockout, IP ACL,
digest), xml_player (the application's XML), legs (ringing the simulated endpoints),
callbacks (signed callback delivery), call_api (Make Call and Transfer requests); then
timeline, factory (a sandbox from the app's settings), server (the web edge), client (its
Python client), cli (the `sipguard sandbox` commands, registered through the
"sipguard.commands" entry point; devtools/demo.py plays scenarios on it). Nothing is imported
here, so loading the package costs the app nothing at start-up.
"""
