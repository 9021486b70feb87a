"""gunicorn settings, read automatically from the working directory (Procfile, make run)."""

import os

bind = os.environ.get("BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
timeout = 30
accesslog = "-"
# %(U)s is the path without its query: handoff tokens travel in the query and stay out of logs.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)sB %(M)sms'
# The control socket lives at one per-user path, so two instances on a host would collide.
control_socket_disable = True
