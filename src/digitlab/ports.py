"""Whether a server could listen on a host and port now: checked before a server says where it listens
(`digitlab serve` and `digitlab ui` announced their URL, then failed: "Address already in use")."""

from __future__ import annotations

import errno
import socket

from digitlab.errors import DigitlabError


class PortInUseError(DigitlabError):
    code = "port_in_use"


def _listen_problem(host: str, port: int) -> OSError | None:
    """Why nothing could listen on host:port now (`socket.gaierror`: the host does not resolve), or None.
    uvicorn and Streamlit both use SO_REUSEADDR, so a port in TIME_WAIT is free for them and for this check."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            return exc
    return None


def port_in_use(host: str, port: int) -> bool:
    """True when nothing could listen on host:port now; a host that does not resolve is left to the server."""
    problem = _listen_problem(host, port)
    return problem is not None and not isinstance(problem, socket.gaierror)


def refuse_busy_port(host: str, port: int, what: str, variable: str) -> None:
    """A one-line `DigitlabError` when a server could not listen on host:port (taken, a host name that does
    not resolve, an address this machine does not have), before it announces its URL."""
    problem = _listen_problem(host, port) if port else None
    if problem is None:
        return
    if isinstance(problem, socket.gaierror):
        raise DigitlabError(f"cannot listen on host {host!r} ({what}): not an address or a name this machine "
                            "knows; e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)",
                            code="invalid_host")  # fmt: skip
    if problem.errno == errno.EADDRINUSE:
        raise PortInUseError(f"port {port} ({what}, {host}) is already in use — stop whatever uses it or choose "
                             f"another port, e.g. --port {port + 1} or {variable}={port + 1}")  # fmt: skip
    raise DigitlabError(f"cannot listen on {host}:{port} ({what}): {problem.strerror or problem}", code="invalid_host")
