"""Run a console entry point with a stub resolver, for tests about host names.

    FAKE_DNS='{"name": ["192.0.2.7"]}' python -m tests.harness.fakedns \\
        apache_metrics_exporter.cli:reaper_console --url http://name:8080/...

``socket.getaddrinfo`` is patched before the program is imported: the names
in FAKE_DNS get its answers, numeric hosts and localhost are answered as
usual (no DNS either way), any other name fails as an unknown name. So the
child sends no DNS query, and - should the code under test be wrong and
connect where a name pointed - connections to anything but loopback fail
too: nothing leaves this machine.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import socket
import sys

LOOPBACK_NAMES = ("localhost", "ip6-localhost", "ip6-loopback")


def _loopback(address: object) -> bool:
    host = str(address[0] if isinstance(address, tuple) else address).split("%")[0]
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            packed = socket.inet_pton(family, host)
        except OSError:
            continue
        return (packed[0] == 127 if len(packed) == 4 else
                packed == b"\0" * 15 + b"\1" or packed[:13] == b"\0" * 10 + b"\xff\xff\x7f")
    return False  # not an IP address: a Unix socket path and the like never get here


def install(table: dict) -> None:
    """Patch the resolver and the connect calls of this process."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):  # noqa: ANN001,ANN202
        name = host.decode() if isinstance(host, bytes) else host
        if name in table:
            number = int(port) if port else 0
            return [(socket.AF_INET6, type or socket.SOCK_STREAM, proto or socket.IPPROTO_TCP,
                     "", (a, number, 0, 0)) if ":" in a else
                    (socket.AF_INET, type or socket.SOCK_STREAM, proto or socket.IPPROTO_TCP,
                     "", (a, number)) for a in table[name]]
        if name is None or str(name).lower().rstrip(".") in LOOPBACK_NAMES:
            return real(host, port, family, type, proto, flags)
        # Numeric hosts only: a name fails here without any query.
        return real(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)

    socket.getaddrinfo = getaddrinfo
    for method in ("connect", "connect_ex"):
        original = getattr(socket.socket, method)

        def guarded(self, address, _original=original):  # noqa: ANN001,ANN202
            if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address):
                raise OSError(errno.ENETUNREACH, "refused by tests.harness.fakedns: "
                              f"{address!r} is beyond loopback")
            return _original(self, address)

        setattr(socket.socket, method, guarded)


def main() -> None:
    install(json.loads(os.environ.get("FAKE_DNS", "{}")))
    module, _, function = sys.argv[1].partition(":")
    sys.argv = [sys.argv[1], *sys.argv[2:]]
    getattr(importlib.import_module(module), function)()


if __name__ == "__main__":
    main()
