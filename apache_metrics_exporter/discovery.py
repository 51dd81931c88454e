"""Where Apache listens, read from its ``Listen`` directives (apache-manager's rules).

Used only when no --url is given: the first usable ``Listen`` line of
``/etc/apache2/ports.conf`` (Debian) or ``/etc/httpd/conf/httpd.conf`` (RHEL)
becomes ``http[s]://ADDRESS[:PORT]/server-status``. Wildcard addresses become
loopback (``0.0.0.0``/``*`` -> 127.0.0.1, ``[::]`` -> ``[::1]``); https is used
on port 443 or when the directive names the protocol.
"""

from __future__ import annotations

import os
import re

from apache_metrics_exporter.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import List, Optional, Sequence

PORTS_CONFIGS = ("/etc/apache2/ports.conf", "/etc/httpd/conf/httpd.conf")
_ADDR_PORT = re.compile(r"^(?:\[([0-9A-Fa-f:.%\w]+)\]|([^\s:\[\]]+)):(\d+)$")


def listen_url(directive_args: Sequence[str], path: str = "/server-status") -> Optional[str]:
    """The status URL for one ``Listen`` directive's arguments, None if unusable."""
    if not directive_args:
        return None
    spec = directive_args[0]
    protocol = directive_args[1].lower() if len(directive_args) > 1 else None
    if spec.isdigit():
        host, port = "127.0.0.1", int(spec)
    else:
        m = _ADDR_PORT.match(spec)
        if not m:
            return None
        v6, v4, port_text = m.groups()
        port = int(port_text)
        if v6 is not None:
            host = "[::1]" if v6 in ("::", "0:0:0:0:0:0:0:0") else f"[{v6}]"
        else:
            host = "127.0.0.1" if v4 in ("0.0.0.0", "*") else v4
    if not 0 < port < 65536:
        return None
    if protocol not in ("http", "https"):
        protocol = "https" if port == 443 else "http"
    default = 443 if protocol == "https" else 80
    netloc = host if port == default else f"{host}:{port}"
    return f"{protocol}://{netloc}{path}"


def discover_urls(config_path: Optional[str] = None) -> List[str]:
    """Status URLs from the Listen directives of a config file, first one first."""
    candidates = [config_path] if config_path else list(PORTS_CONFIGS)
    for path in candidates:
        if not os.path.exists(path):
            continue
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                lines = fh.readlines()
        except OSError as exc:
            raise UsageError(f"cannot read --ports-config {path}: {exc.strerror}") from None
        urls = []
        for line in lines:
            tokens = line.split("#", 1)[0].split()
            if len(tokens) >= 2 and tokens[0].lower() == "listen":
                url = listen_url(tokens[1:])
                if url and url not in urls:
                    urls.append(url)
        if urls:
            return urls
        raise UsageError(f"no usable Listen directive in {path}; give --url "
                         "http://HOST:PORT/server-status")
    if config_path:
        raise UsageError(f"--ports-config {config_path} does not exist")
    raise UsageError("no --url given and none of " + ", ".join(PORTS_CONFIGS)
                     + " exists to find Apache's address; give --url "
                     "http://HOST:PORT/server-status")
