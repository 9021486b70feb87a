"""Plivo SIP Guard: verify Plivo's voice callbacks, route by their SIP-auth result, hand calls to
credentialed human agents, and watch who fails SIP authentication.

Subpackages, one concern each: ``calls`` (a call's forms, signatures, routing, agents and
answers), ``store`` (the database), ``monitoring`` (analytics, lockouts, metrics), ``plivo``
(Plivo's REST API) and ``commands`` (the ``sipguard`` CLI). Flask lives only at the web edge
(``app.py``, ``webhooks/``) and in ``commands``.
"""
