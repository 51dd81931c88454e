"""Whether a URL's host is this machine's loopback, decided by address.

Process figures and the reaper apply only to an Apache reached over loopback:
that is the one case where "the process listening on the URL's port" is a
process of this host for sure. The look of a name proves nothing
(``127.attacker.example`` and ``127.0.0.1.nip.io`` are remote hosts), so a
literal address is checked as an address and a name is resolved: every
address it resolves to must be a loopback address (``localhost``).
"""

from __future__ import annotations

import socket

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import List, Optional


def _literal(host: str) -> Optional[bytes]:
    """The packed address of a literal IPv4/IPv6 address, None for a name."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
    return None


def is_loopback(packed: bytes) -> bool:
    """127.0.0.0/8, ::1, and 127.0.0.0/8 mapped into IPv6."""
    if len(packed) == 4:
        return packed[0] == 127
    if packed == b"\0" * 15 + b"\1":
        return True
    return packed[:12] == b"\0" * 10 + b"\xff\xff" and packed[12] == 127


def loopback_addresses(host: str) -> Optional[List[str]]:
    """The addresses ``host`` stands for when all of them are loopback
    addresses, else None (remote, mixed, or not resolvable)."""
    host = host.strip("[]")
    if "%" in host:  # a scoped (link-local) address is never loopback
        return None
    packed = _literal(host)
    if packed is not None:
        return [socket.inet_ntop(socket.AF_INET if len(packed) == 4 else socket.AF_INET6,
                                 packed)] if is_loopback(packed) else None
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return None
    out: List[str] = []
    for _family, _type, _proto, _name, addr in infos:
        text = str(addr[0])
        packed = _literal(text.split("%")[0])
        if packed is None or not is_loopback(packed):
            return None
        if text not in out:
            out.append(text)
    return out or None
