"""Where Apache listens, read from its configuration as Apache itself reads it.

Used only when no --url is given. The main configuration file is read with
the rules that decide which ``Listen`` directives take effect:

- ``Include`` / ``IncludeOptional`` are followed (wildcards, directories,
  paths relative to ``ServerRoot``), in Apache's order;
- ``<IfModule [!]NAME>`` is evaluated (nested too) against the modules loaded
  so far: Apache's compiled-in ones, then every ``LoadModule`` met on the way
  - on Debian those of ``mods-enabled/*.load``, on RHEL/Fedora those of
  ``httpd.conf`` and ``conf.modules.d/*.conf``; ``<IfDefine>`` against
  ``Define`` (no ``-D`` is known here); ``<IfFile>`` against the file system.

Debian's ``/etc/apache2/ports.conf`` stands for the whole tree of its
``apache2.conf``; RHEL's ``/etc/httpd/conf/httpd.conf`` has its ServerRoot one
directory up. Each ``Listen`` becomes ``http[s]://ADDRESS[:PORT]/server-status``
(wildcards become loopback: ``0.0.0.0``/``*`` -> 127.0.0.1, ``[::]`` ->
``[::1]``; https on port 443 or when the directive names the protocol).

One URL is chosen, since these addresses all lead to the same Apache: among
the addresses with a TCP socket in LISTEN state (``/proc/net/tcp``,
``/proc/net/tcp6``) if any, else among all (Apache is down: its URL is still
the one to report on), plain http before https (a loopback https URL seldom
matches the certificate), then in configuration order.

Reading is bounded (files, bytes, include depth, include loops), so a hostile
or broken tree cannot make a run hang or grow.
"""

from __future__ import annotations

import glob
import os
import re
import socket
import stat

from apache_metrics_exporter.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

PORTS_CONFIGS = ("/etc/apache2/ports.conf", "/etc/httpd/conf/httpd.conf")
_ADDR_PORT = re.compile(r"^(?:\[([0-9A-Fa-f:.%\w]+)\]|([^\s:\[\]]+)):(\d+)$")
_VAR = re.compile(r"\$\{([^}]*)\}")

# Compiled into Debian's /usr/sbin/apache2 (`apache2 -l`) and RHEL's httpd.
STATIC_MODULES = frozenset((
    "core.c", "core_module", "mod_so.c", "so_module", "http_core.c", "http_module",
    "mod_watchdog.c", "watchdog_module", "mod_log_config.c", "log_config_module",
    "mod_logio.c", "logio_module", "mod_version.c", "version_module",
    "mod_unixd.c", "unixd_module"))

MAX_FILES = 512            # config files read for one discovery
MAX_FILE_BYTES = 1 << 20   # read of each file
MAX_DEPTH = 32             # nested Includes (Apache allows 128)
MAX_LINE = 1 << 16         # one logical line, continuations joined


# --- the configuration -------------------------------------------------------------------

def _tokens(line: str) -> List[str]:
    """A directive line split as Apache's ap_getword_conf does: quotes group words."""
    out: List[str] = []
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i].isspace():
            i += 1
        if i >= n:
            break
        quote = line[i] if line[i] in "\"'" else ""
        if quote:
            end = line.find(quote, i + 1)
            end = n if end < 0 else end
            out.append(line[i + 1:end])
            i = end + 1
        else:
            start = i
            while i < n and not line[i].isspace():
                i += 1
            out.append(line[start:i])
    return out


def _logical_lines(text: str) -> Iterator[Tuple[int, List[str]]]:
    """Directive lines with the number of their first physical line:
    continuations joined, comments and blank lines skipped."""
    held = ""
    first = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = held + raw.strip() if held else raw.strip()
        if not held:
            first = number
        held = ""
        if line.endswith("\\") and len(line) < MAX_LINE:
            held = line[:-1] + " "
            continue
        if line and not line.startswith("#"):
            yield first, _tokens(line[:MAX_LINE])
    if held.strip() and not held.lstrip().startswith("#"):
        yield first, _tokens(held)


def _section_argument(tokens: Sequence[str]) -> str:
    """``<IfModule !mod_ssl.c>`` -> ``!mod_ssl.c``."""
    arg = " ".join(tokens[1:]).strip()
    if arg.endswith(">"):
        arg = arg[:-1].strip()
    elif tokens[0].endswith(">"):  # "<IfModule>" with no argument
        arg = ""
    return arg.strip("\"'")


def _module_names(name: str, path: str) -> Tuple[str, ...]:
    """What ``<IfModule>`` may call a module loaded by ``LoadModule name path``:
    its identifier (``ssl_module``) or its source file (``mod_ssl.c``)."""
    names = [name]
    if name.endswith("_module"):
        names.append(f"mod_{name[:-len('_module')]}.c")
    base = os.path.basename(path)
    if base.startswith("mod_") and base.endswith(".so"):
        names.append(base[:-3] + ".c")
    return tuple(names)


def _opener(path: str, flags: int) -> int:
    """open()'s opener for a configuration file: never waits (a FIFO opens
    at once, and is then refused) and takes no controlling terminal."""
    return os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY)


class ApacheConfig:
    """The effective ``Listen`` (and ``WSGIDaemonProcess``) directives of one
    Apache configuration tree."""

    def __init__(self, server_root: str) -> None:
        self.server_root = server_root
        self.modules: Set[str] = set(STATIC_MODULES)
        self.defines: Dict[str, str] = {}
        self.listens: List[List[str]] = []
        self.wsgi_groups: List[str] = []  # WSGIDaemonProcess names, in order
        self.files: List[str] = []  # every file read, in order
        self._open: List[str] = []  # the Include chain being read (loops)
        # For subclasses (check.py): the sections in effect around a
        # directive, (kind, argument, file, line) from the outermost, and
        # where the directive is; ``directive`` sees every one not read here.
        self.sections: List[Tuple[str, str, str, int]] = []
        self.position: Tuple[str, int] = ("", 0)

    # -- reading ----------------------------------------------------------------
    def read(self, path: str) -> None:
        """Read one file (and what it includes) as Apache would."""
        real = os.path.realpath(path)
        if real in self._open or len(self._open) >= MAX_DEPTH or len(self.files) >= MAX_FILES:
            return
        if not os.path.isfile(real):
            return  # a FIFO or a device would block or never end
        try:
            # Opened without waiting and judged as opened: a FIFO swapped in
            # since the check above (by whoever may write an included file)
            # would block the open for ever, root's reaper with it.
            with open(path, encoding="utf-8", errors="replace", opener=_opener) as fh:
                if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                    return
                text = fh.read(MAX_FILE_BYTES)
        except OSError:
            return  # Apache would refuse to start; other files may still tell
        self.files.append(path)
        self._open.append(real)
        depth, where = len(self.sections), self.position
        try:
            self._evaluate(text, path)
        finally:
            self._open.pop()
            del self.sections[depth:]  # a file cannot close its includer's sections
            self.position = where

    def directive(self, name: str, args: List[Optional[str]]) -> None:
        """A directive this class does not read itself, and WSGIDaemonProcess
        (lower-case ``name``, ``${VAR}``-expanded ``args``, None where
        undefined); for subclasses."""

    def _evaluate(self, text: str, path: str = "") -> None:
        skipping = 0  # depth inside a section whose condition is false
        for number, tokens in _logical_lines(text):
            head = tokens[0].lower()
            if skipping:
                if head.startswith("</"):
                    skipping -= 1
                elif head.startswith("<"):
                    skipping += 1
                continue
            if head.startswith("</"):
                if self.sections:  # the end of a true (or a transparent) section
                    self.sections.pop()
                continue
            if head.startswith("<"):
                kind, arg = head[1:].rstrip(">"), _section_argument(tokens)
                if not self._condition(kind, arg):
                    skipping = 1
                else:
                    self.sections.append((kind, arg, path, number))
                continue
            args = [self._expand(t) for t in tokens[1:]]
            if head == "listen" and args and None not in args[:2]:
                self.listens.append([a or "" for a in args[:2]])
            elif head == "wsgidaemonprocess" and args and args[0]:
                self.wsgi_groups.append(args[0])
                self.position = (path, number)
                self.directive(head, args)  # its options: check.py's display-name
            elif head == "loadmodule" and len(args) >= 2 and None not in args[:2]:
                self.modules.update(_module_names(args[0] or "", args[1] or ""))
            elif head in ("include", "includeoptional") and args and args[0]:
                for path in self._expand_include(args[0]):
                    self.read(path)
            elif head == "serverroot" and args and args[0]:
                self.server_root = args[0]
            elif head == "define" and args and args[0]:
                self.defines[args[0]] = args[1] if len(args) > 1 and args[1] else ""
            elif head == "undefine" and args and args[0]:
                self.defines.pop(args[0], None)
            else:
                self.position = (path, number)
                self.directive(head, args)

    def _condition(self, section: str, arg: str) -> bool:
        """Whether the contents of ``<section arg>`` take effect."""
        negate = arg.startswith("!")
        name = arg[1:].strip() if negate else arg
        if section == "ifmodule":
            found = name in self.modules
        elif section == "ifdefine":
            found = name in self.defines
        elif section == "iffile":
            found = bool(name) and os.path.exists(self._absolute(name))
        else:  # other sections (VirtualHost, If, IfDirective, ...) hold what they hold
            return True
        return found != negate

    def _expand(self, word: str) -> Optional[str]:
        """``${NAME}`` from ``Define``; None when a name is not defined here."""
        if "${" not in word:
            return word
        missing = []

        def value(m: re.Match) -> str:
            if m.group(1) not in self.defines:
                missing.append(m.group(1))
                return ""
            return self.defines[m.group(1)]
        expanded = _VAR.sub(value, word)
        return None if missing else expanded

    def _absolute(self, path: str) -> str:
        return path if os.path.isabs(path) else os.path.join(self.server_root, path)

    def _expand_include(self, pattern: Optional[str]) -> List[str]:
        """The files one Include names, in Apache's (alphabetical) order."""
        if not pattern:
            return []
        path = self._absolute(pattern)
        if any(c in path for c in "*?["):
            matches = []
            for match in glob.iglob(path):
                matches.append(match)
                if len(matches) >= MAX_FILES:
                    break
            matches.sort()
        else:
            matches = [path]
        files: List[str] = []
        for match in matches:
            if os.path.isdir(match):
                for top, dirs, names in os.walk(match):
                    dirs.sort()
                    files.extend(os.path.join(top, n) for n in sorted(names)
                                 if not _backup_file(n))
                    if len(files) >= MAX_FILES:
                        break
            elif os.path.isfile(match) and not (match != path
                                                and _backup_file(os.path.basename(match))):
                files.append(match)
            if len(files) >= MAX_FILES:
                break
        return files[:MAX_FILES]


def _backup_file(name: str) -> bool:
    """Editor and dpkg leftovers, which Debian's Apache skips in wildcard Includes."""
    return name.endswith("~") or ".dpkg-" in name or name.endswith((".bak", ".swp"))


def main_config(path: str) -> Tuple[str, str]:
    """The file to read for a --ports-config PATH, and the ServerRoot to start with.

    Debian's ports.conf is read through the apache2.conf beside it (which loads
    the modules first); RHEL's conf/httpd.conf has its ServerRoot one level up.
    """
    folder = os.path.dirname(os.path.abspath(path))
    sibling = os.path.join(folder, "apache2.conf")
    if os.path.basename(path) != "apache2.conf" and os.path.isfile(sibling):
        return sibling, folder
    if os.path.basename(folder) == "conf":
        return path, os.path.dirname(folder)
    return path, folder


def read_config(path: str) -> ApacheConfig:
    """The configuration tree that PATH belongs to, evaluated."""
    main, root = main_config(path)
    config = ApacheConfig(root)
    config.read(main)
    if os.path.realpath(path) not in {os.path.realpath(f) for f in config.files}:
        config.read(path)  # a file the main config does not include: still asked for
    return config


# --- where something listens -----------------------------------------------------------

def listening_sockets(proc_root: str = "/proc") -> Optional[Set[Tuple[bytes, int]]]:
    """(address, port) of every TCP socket in LISTEN state; None when neither
    table can be read (no /proc: nothing can be told)."""
    from apache_metrics_exporter.collect.procfs import tcp_listeners

    found = tcp_listeners(proc_root)
    return None if found is None else {(raw, port) for raw, port, _inode in found}


def _listen_address(directive_args: Sequence[str]) -> Tuple[Optional[bytes], int]:
    """The address a Listen directive binds (b"" for a wildcard, None for a host
    name, which is not resolved here) and its port (0 when unusable)."""
    spec = directive_args[0] if directive_args else ""
    if spec.isdigit():
        return b"", int(spec)
    m = _ADDR_PORT.match(spec)
    if not m:
        return None, 0
    v6, v4, port = m.groups()
    try:
        if v6 is not None:
            raw = socket.inet_pton(socket.AF_INET6, v6.split("%", 1)[0])
            if raw[:12] == b"\0" * 10 + b"\xff\xff":
                raw = raw[12:]
        elif v4 == "*":
            raw = b""
        else:
            raw = socket.inet_pton(socket.AF_INET, v4)
    except OSError:
        return None, int(port)
    return (b"" if not raw.strip(b"\0") else raw), int(port)


def is_listening(directive_args: Sequence[str], sockets: Set[Tuple[bytes, int]]) -> bool:
    """Whether some LISTEN socket could be this Listen directive's."""
    address, port = _listen_address(directive_args)
    for raw, number in sockets:
        if number != port:
            continue
        if address is None or not address or not raw.strip(b"\0") or raw == address:
            return True
    return False


# --- the URL ------------------------------------------------------------------------------

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


def choose(listens: Sequence[Sequence[str]],
           sockets: Optional[Set[Tuple[bytes, int]]]) -> List[str]:
    """The usable URLs in order of preference (see the module's docstring)."""
    ranked = []
    for order, args in enumerate(listens):
        url = listen_url(args)
        if url is None:
            continue
        live = sockets is not None and is_listening(args, sockets)
        ranked.append((not live, url.startswith("https:"), order, url))
    if any(not dead for dead, *_ in ranked):
        ranked = [r for r in ranked if not r[0]]
    urls: List[str] = []
    for *_, url in sorted(ranked):
        if url not in urls:
            urls.append(url)
    return urls


def discover_urls(config_path: Optional[str] = None, proc_root: str = "/proc") -> List[str]:
    """The status URL of this machine's Apache, from its configuration: a list
    of one (the best of its Listen addresses)."""
    candidates = [config_path] if config_path else list(PORTS_CONFIGS)
    for path in candidates:
        if not os.path.exists(path):
            continue
        if not os.access(path, os.R_OK) or os.path.isdir(path):
            raise UsageError(f"cannot read --ports-config {path}: "
                             + ("is a directory" if os.path.isdir(path) else "permission denied"))
        config = read_config(path)
        urls = choose(config.listens, listening_sockets(proc_root))
        if urls:
            return urls[:1]
        main = config.files[0] if config.files else path
        raise UsageError(f"no usable Listen directive in {main} or the files it includes; "
                         "give --url "
                         "http://HOST:PORT/server-status")
    if config_path:
        raise UsageError(f"--ports-config {config_path} does not exist")
    raise UsageError("no --url given and none of " + ", ".join(PORTS_CONFIGS)
                     + " exists to find Apache's address; give --url "
                     "http://HOST:PORT/server-status")
