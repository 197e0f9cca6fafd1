"""ops: process plumbing shared by the node and the coordinator (how they run as services).

Map of this package::

    atomic.py    atomic file writes (temp file beside, then ``os.replace``; optionally fsynced): the one home
    logs.py      logging set-up: human or JSON lines, to stderr or a rotating file, one level
    sdnotify.py  systemd readiness (``READY=1``, ``STOPPING=1``): one datagram to $NOTIFY_SOCKET

Why a package of its own: ``coordinator`` may not import ``node`` and ``protocol`` stays sans-I/O,
so the one home for these ideas sits beside them. Allowed imports: the standard library only
(import-linter); nothing from this project.
"""
