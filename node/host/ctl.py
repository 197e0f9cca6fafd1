"""``swarm ctl``: control a running node from another terminal through a unix socket.

The socket is ``<state_dir>/ctl.sock``, mode 0600 (only the node's owner can use it; the state
dir holds the identity key anyway). One request per connection: a JSON object on one line,
``{"cmd": "pause" | "resume" | "status" | "leave", "reason": "..."}``, at most ``MAX_REQUEST``
bytes; one JSON reply line, ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. Bad input
(too long, not JSON, unknown command, a client that stalls) gets an error reply or a closed
connection, and is counted; the server thread never dies of it.

    pause    hold the node back (the work gate's ``paused`` reason): it leaves its groups
    resume   clear ``paused`` (other reasons, e.g. the schedule, may still hold it back)
    status   the node's status (what ``status.json`` says, plus the gate's reasons)
    leave    orderly shutdown, as SIGTERM
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["COMMANDS", "CtlBusy", "CtlError", "CtlServer", "MAX_REQUEST", "format_reply", "request", "socket_path"]

logger = logging.getLogger(__name__)

MAX_REQUEST = 4096  # bytes in one request line
MAX_REPLY = 1 << 20  # bytes a client reads back
COMMANDS = ("pause", "resume", "status", "leave")
_SUN_PATH_MAX = 107  # Linux sockaddr_un.sun_path, less the terminating NUL
CLIENT_TIMEOUT_S = 2.0  # a connected client that sends nothing for this long is dropped


class CtlError(Exception):
    """No node answers on this state dir, or it refused the request (the message says which)."""


class CtlBusy(CtlError):
    """Another live node already serves this state dir's socket."""


def socket_path(state_dir: Path) -> Path:
    return Path(state_dir).expanduser() / "ctl.sock"


def _check_length(path: Path) -> None:
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise CtlError(f"{path}: the path is too long for a unix socket ({_SUN_PATH_MAX} bytes at most); "
                       "use a shorter --state-dir")


Handler = Callable[[str, dict[str, Any]], dict[str, Any]]


class CtlServer:
    """Serves ``handler(cmd, request) -> reply dict`` on the socket, one connection at a time."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path, self.handler = Path(path), handler
        self.bad_requests = 0
        self.served = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        _check_length(self.path)
        if self.path.exists() or self.path.is_symlink():
            try:
                request(self.path.parent, "status", timeout=2.0)
            except CtlError:
                self.path.unlink()  # left by a node that died: nobody answers
            else:
                raise CtlBusy(f"another node is running with this state dir ({self.path} answers); "
                              "stop it or use another --state-dir")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # created 0600: no window in which others could connect
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(4)
        sock.settimeout(0.5)  # so stop() is noticed
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="ctl", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.path.unlink(missing_ok=True)

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                if not self._stop.is_set():
                    logger.warning("ctl socket failed; `swarm ctl` no longer reaches this node", exc_info=True)
                return
            with conn:
                try:
                    self._answer(conn)
                except Exception:  # one bad client never stops the server
                    self.bad_requests += 1
                    logger.debug("ctl connection failed", exc_info=True)

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(CLIENT_TIMEOUT_S)
        data = b""
        while b"\n" not in data and len(data) <= MAX_REQUEST:
            chunk = conn.recv(MAX_REQUEST + 1 - len(data))
            if not chunk:
                break
            data += chunk
        reply = self._reply(data)
        conn.sendall(json.dumps(reply, separators=(",", ":"), default=str).encode() + b"\n")
        conn.shutdown(socket.SHUT_WR)
        # closing with unread input would reset the connection and could drop the reply before the
        # client reads it: drain a bounded amount of whatever an oversized request still sends
        conn.settimeout(0.2)
        drained = 0
        try:
            while drained < 16 * MAX_REQUEST and (chunk := conn.recv(MAX_REQUEST)):
                drained += len(chunk)
        except OSError:
            pass

    def _reply(self, data: bytes) -> dict[str, Any]:
        line = data.split(b"\n", 1)[0]
        if len(line) > MAX_REQUEST:
            return self._bad(f"request longer than {MAX_REQUEST} bytes")
        try:
            req = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return self._bad("request is not a JSON object on one line")
        if not isinstance(req, dict):
            return self._bad("request is not a JSON object")
        cmd = req.get("cmd")
        if cmd not in COMMANDS:
            return self._bad(f"unknown command {cmd!r}; one of {', '.join(COMMANDS)}")
        reason = req.get("reason", "")
        if not isinstance(reason, str) or len(reason) > 200:
            return self._bad("reason must be a string of at most 200 characters")
        try:
            reply = self.handler(cmd, req)
        except Exception as e:
            logger.warning("ctl %s failed: %r", cmd, e)
            return {"ok": False, "error": f"{cmd} failed: {e}"}
        self.served += 1
        return {"ok": True, **reply}

    def _bad(self, error: str) -> dict[str, Any]:
        self.bad_requests += 1
        logger.info("ctl: bad request (%s)", error)
        return {"ok": False, "error": error}


def request(state_dir: Path, cmd: str, *, reason: str = "", timeout: float = 10.0) -> dict[str, Any]:
    """Send one command to the node running on ``state_dir``; its reply. Raises ``CtlError``."""
    path = socket_path(state_dir)
    _check_length(path)
    body = {"cmd": cmd, **({"reason": reason} if reason else {})}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps(body).encode() + b"\n")
            data = b""
            while b"\n" not in data and len(data) <= MAX_REPLY:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except FileNotFoundError:
        raise CtlError(f"no node is running with state dir {path.parent} (no {path.name})") from None
    except ConnectionRefusedError:
        raise CtlError(f"no node answers on {path} (it stopped)") from None
    except PermissionError:
        raise CtlError(f"{path}: permission denied (run as the user that runs the node)") from None
    except (socket.timeout, OSError) as e:
        raise CtlError(f"{path}: {e}") from None
    try:
        reply = json.loads(data.split(b"\n", 1)[0])
    except ValueError:
        raise CtlError(f"{path}: the node sent no valid reply") from None
    if not isinstance(reply, dict):
        raise CtlError(f"{path}: the node sent no valid reply")
    if not reply.get("ok"):
        raise CtlError(str(reply.get("error", "refused")))
    return reply


def format_reply(cmd: str, reply: dict[str, Any]) -> str:
    """One or two lines for people (``swarm ctl`` prints them)."""
    held = "; ".join((reply.get("gate") or {}).values())
    state = (f"round {reply.get('round')}, {reply.get('rounds')} rounds done, {reply.get('tokens', 0):,} tokens, "
             f"status {reply.get('status')}")
    head = {"pause": "pausing", "resume": "resumed", "leave": "leaving", "status": "node"}[cmd]
    lines = [f"{head}: {reply.get('peer_id')} ({state})"]
    if held:
        lines.append(f"held back: {held}")
    elif cmd != "leave":
        lines.append("training (nothing holds it back)")
    return "\n".join(lines)
