"""The address of a Ray cluster as a user gives it (``--address``), before Ray is imported: what
kind of address it is, whether it is this machine's loopback, the client environment Ray must be
imported with, and quick network probes (is something listening, does it speak HTTP). Nothing
here imports Ray; :mod:`autopipe.tune.cluster` connects.

Kinds: ``auto`` (the cluster this machine runs: ``RAY_ADDRESS`` or the latest ``ray start``),
``gcs`` (``HOST:PORT``, the head's GCS, 6379 by default: what ``ray.init`` and
``autopipe tune --address`` take), ``client`` (``ray://HOST:PORT``, a Ray Client server) and
``http`` (``http(s)://HOST:PORT``, the dashboard's Job API: what ``autopipe submit`` takes).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from autopipe.errors import ClusterError

# Seconds a probe waits for a TCP connection or an HTTP answer (ray.init itself retries an
# unreachable or silent GCS for minutes).
ADDRESS_PROBE_S = 5.0
KINDS = ("auto", "gcs", "client", "http")


@dataclass(frozen=True)
class Address:
    raw: str
    kind: str  # one of KINDS
    host: str = ""
    port: int = 0

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse(raw: str, flag: str = "--address") -> Address:
    """``raw`` as an :class:`Address`; a malformed one is a one-line :class:`ClusterError`."""
    raw = raw.strip()
    if raw in ("auto", ""):
        return Address(raw or "auto", "auto")
    if "://" in raw:
        parts = urlsplit(raw)
        scheme = parts.scheme.lower()
        kind = {"ray": "client", "http": "http", "https": "http"}.get(scheme)
        if kind is None:
            raise ClusterError(
                f"{flag} {raw!r}: the scheme must be ray:// (Ray Client) or http(s):// (the "
                f"dashboard's Job API), but got {scheme}://"
            )
        if not parts.hostname:
            raise ClusterError(f"{flag} {raw!r}: no host in the address")
        try:
            port = parts.port
        except ValueError:
            raise ClusterError(f"{flag} {raw}: the port must be a number in 1..65535") from None
        if port is None:
            port = {"client": 10001, "http": 443 if scheme == "https" else 8265}[kind]
        return Address(raw, kind, parts.hostname, int(port))
    host, sep, port_text = raw.rpartition(":")
    if raw.startswith("["):  # [IPv6]:PORT
        host, sep, port_text = raw[1:].partition("]:")
    if not sep or not host:
        raise ClusterError(
            f"{flag} {raw!r}: expected auto, HOST:PORT, ray://HOST:PORT or http://HOST:PORT"
        )
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ClusterError(
            f"{flag} {raw}: the port must be a number in 1..65535, but got {port_text!r}"
        )
    return Address(raw, "gcs", host, int(port_text))


def auto_address() -> str | None:
    """The GCS address ``--address auto`` means here: ``RAY_ADDRESS``, else the cluster the
    latest ``ray start`` on this machine recorded (Ray's own lookup), else ``None``."""
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env and env != "auto":
        return env
    tmp = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray" / "ray_current_cluster"
    try:
        text = tmp.read_text().strip()
    except OSError:
        return None
    return text or None


def client_env(address: Address) -> None:
    """The environment Ray must be imported with to reach ``address`` (set before importing
    Ray, in the CLI; a user's own settings win).

    - A cluster on this machine's loopback: Ray would replace 127.0.0.1 by the machine's
      routable address (and then wait minutes for a GCS that does not listen there) unless
      ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``.
    - A token (``RAY_AUTH_TOKEN``, or a file named by ``RAY_AUTH_TOKEN_PATH``): Ray sends it only
      in token mode, so ``RAY_AUTH_MODE=token``.
    """
    target = address
    if address.kind == "auto":
        found = auto_address()
        target = parse(found) if found else address
    if target.loopback:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if token_source() and not os.environ.get("RAY_AUTH_MODE"):
        os.environ["RAY_AUTH_MODE"] = "token"


def check_listening(
    address: Address, flag: str = "--address", timeout_s: float = ADDRESS_PROBE_S
) -> None:
    """One TCP connection attempt to ``address`` (``auto`` is left to Ray): nothing listening,
    an unknown host or no answer in ``timeout_s`` is a one-line :class:`ClusterError`."""
    if address.kind == "auto":
        return
    what = f"{flag} {address.raw}"
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout_s):
            pass
    except socket.gaierror:
        raise ClusterError(
            f"{what}: no Ray cluster reachable (cannot resolve host {address.host!r})"
        ) from None
    except TimeoutError:
        raise ClusterError(
            f"{what}: no Ray cluster reachable (no answer in {timeout_s:g} s)"
        ) from None
    except ConnectionRefusedError:
        raise ClusterError(
            f"{what}: no Ray cluster reachable (nothing listens on {address.hostport})"
        ) from None
    except OSError as e:
        raise ClusterError(f"{what}: no Ray cluster reachable ({e.strerror or e})") from None


def speaks_http(host: str, port: int, timeout_s: float = ADDRESS_PROBE_S) -> bool:
    """Whether the server at ``host:port`` answers a plain HTTP/1.0 request with an HTTP status
    line (the dashboard, a proxy) rather than gRPC (a GCS or a Ray Client server)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            head = sock.recv(16)
    except OSError:
        return False
    return head.startswith(b"HTTP/")


def token_source() -> str:
    """Where this client's Ray token comes from: ``RAY_AUTH_TOKEN``, or the file that
    ``RAY_AUTH_TOKEN_PATH`` names when it exists; ``""`` for none."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path and Path(path).expanduser().is_file():
        return f"RAY_AUTH_TOKEN_PATH ({path})"
    return ""
