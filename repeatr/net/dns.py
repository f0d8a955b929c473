"""The name-resolution files a run sees: ``/etc/resolv.conf`` and ``/etc/hosts``.

The network layer only computes their contents (:class:`NetAttachment`
carries them); the assembly writes them to files and binds them into the
container.

resolv.conf:

- nameservers given (in the formula): exactly those, one ``nameserver`` line each;
- otherwise ``host``: the host's file as it is;
- otherwise ``bridge``: the host's ``nameserver``, ``search`` and ``options``
  lines, minus loopback nameservers (unreachable from the run's namespace).
  When the host's file points at systemd-resolved's stub (127.0.0.53), the
  upstream list in ``/run/systemd/resolve/resolv.conf`` is used instead.
  No public resolver is ever added behind the user's back: a run with no
  usable nameserver gets a file that says so in a comment;
- ``none``: no nameserver (there is no network).

hosts: ``localhost`` for 127.0.0.1 and ::1, and the container's hostname
for its own address (127.0.1.1 without one).
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, ip_address
from pathlib import Path

from repeatr.errors import UsageError
from repeatr.net.config import NetworkPolicy

HOST_RESOLV_CONF = Path("/etc/resolv.conf")
RESOLVED_UPSTREAM = Path("/run/systemd/resolve/resolv.conf")
_KEEP = ("nameserver", "search", "domain", "options")


def check_nameservers(nameservers: Sequence[str]) -> list[str]:
    out = []
    for ns in nameservers:
        try:
            out.append(str(ip_address(ns)))
        except ValueError:
            raise UsageError(f"invalid nameserver {ns!r}: expected an IP address") from None
    return out


def resolv_conf(
    policy: NetworkPolicy,
    nameservers: Sequence[str] | None = None,
    *,
    host_file: Path = HOST_RESOLV_CONF,
    resolved_upstream: Path = RESOLVED_UPSTREAM,
) -> str:
    """The contents of the run's ``/etc/resolv.conf`` (see the module doc)."""
    if nameservers:
        return "".join(f"nameserver {ns}\n" for ns in check_nameservers(nameservers))
    if policy is NetworkPolicy.NONE:
        return "# network policy 'none': no nameserver\n"
    host_text = _read(host_file)
    if policy is NetworkPolicy.HOST:
        return host_text
    lines = _relevant(host_text)
    servers = [_server(ln) for ln in lines if ln.startswith("nameserver")]
    if servers and all(_is_loopback(s) for s in servers):
        upstream = _relevant(_read(resolved_upstream))
        if any(_server(ln) for ln in upstream):
            lines = upstream
    kept = [ln for ln in lines if not ln.startswith("nameserver") or not _is_loopback(_server(ln))]
    if not any(_server(ln) for ln in kept):
        kept.insert(
            0,
            "# no usable nameserver: the host's are loopback or absent; "
            "give nameservers in the formula",
        )
    return "".join(f"{ln}\n" for ln in kept)


def hosts(hostname: str, address: IPv4Address | None = None) -> str:
    """The contents of the run's ``/etc/hosts``."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    if hostname:
        short = hostname.split(".")[0]
        names = hostname if short == hostname else f"{hostname} {short}"
        lines.append(f"{address or '127.0.1.1'}\t{names}")
    return "".join(f"{ln}\n" for ln in lines)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        return ""


def _relevant(text: str) -> list[str]:
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if line and line.split()[0] in _KEEP:
            out.append(" ".join(line.split()))
    return out


def _server(line: str) -> str:
    """The address on a ``nameserver`` line ("" for any other line)."""
    parts = line.split()
    return parts[1] if len(parts) > 1 and parts[0] == "nameserver" else ""


def _is_loopback(server: str) -> bool:
    """Loopback, or not an address at all (neither is usable from a run's namespace)."""
    try:
        return ip_address(server.split("%")[0]).is_loopback
    except ValueError:
        return True
