"""``--web.config.file``: exporter-toolkit's web configuration, as apache_exporter reads it.

The same YAML file (docs/web-configuration.md of prometheus/exporter-toolkit)
turns on TLS (``tls_server_config``), bcrypt basic auth (``basic_auth_users``),
extra response headers (``http_server_config.headers``) and a rate limit
(``rate_limit``) for the --listen endpoint. It is read strictly, as the
toolkit does (unknown or duplicate keys are errors), but all problems are
reported together in one line, before the endpoint listens. It says who may
scrape, so it is read only when trusted (trust.py), like every settings file.

Relative file names (cert_file, key_file, client_ca_file) are relative to the
file's directory, as in the toolkit. The differences (docs/prometheus.md):
the file is read at start, not at every request; ``RequireAnyClientCert``
(any certificate, unverified) is refused; ``curve_preferences`` keeps only
its first curve; ``http2`` is accepted and ignored (HTTP/1.x only).

PyYAML is imported only when a file is given, bcrypt only when it has users.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

from apache_metrics_exporter.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Any, Dict, List, Optional, Set, Tuple

OPTION = "--web.config.file"

_TLS_KEYS = ("cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type",
             "client_ca_file", "client_allowed_sans", "min_version", "max_version",
             "cipher_suites", "prefer_server_cipher_suites", "curve_preferences")
_TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit")
_HTTP_KEYS = ("http2", "headers")
# The headers the toolkit lets a file set, with their allowed values (None: any).
HEADERS: Dict[str, Optional[Tuple[str, ...]]] = {
    "Strict-Transport-Security": None, "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"), "X-XSS-Protection": None,
    "Content-Security-Policy": None}
TLS_VERSIONS = ("TLS10", "TLS11", "TLS12", "TLS13")
CLIENT_AUTH = ("", "NoClientCert", "RequestClientCert", "RequireAnyClientCert",
               "RequireClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert")
# Go's names (crypto/tls CipherSuites()) -> OpenSSL's; TLS 1.3 suites are not
# configurable in Go either (accepted, ignored).
CIPHERS = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_AES_128_GCM_SHA256": "", "TLS_AES_256_GCM_SHA384": "",
    "TLS_CHACHA20_POLY1305_SHA256": "",
}
CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1",
          "X25519": "X25519"}
# A bcrypt hash: $2a$/$2b$/$2y$, a two-digit cost, 53 characters of salt and hash.
_BCRYPT_ALPHABET = frozenset("./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
# Checked for unknown users, so that a wrong name costs as long as a wrong password.
_DUMMY_HASH = b"$2b$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"
# Requests checked or waiting for a check at once (a bcrypt takes ~60 ms at
# cost 10, one at a time): the others are told to come back (check_basic).
CHECKS = 8


class WebConfig:
    """What a web configuration file asks of the endpoint."""

    def __init__(self) -> None:
        self.ssl_context: Any = None  # ssl.SSLContext when TLS is on
        self.allowed_sans: Optional[List[str]] = None
        self.users: Dict[str, bytes] = {}  # user -> bcrypt hash
        self.headers: List[Tuple[str, str]] = []
        self.limiter: Optional[RateLimiter] = None
        # Digests of credentials found right and found wrong, apart: wrong
        # ones (anyone can send many) never push out a scraper's right one.
        self._good: Set[bytes] = set()
        self._bad: Set[bytes] = set()
        self._lock = threading.Lock()
        self._checks = threading.BoundedSemaphore(CHECKS)

    def check_basic(self, header: str) -> Optional[bool]:
        """Whether an Authorization header names a user of basic_auth_users with
        the right password; verdicts are cached by a digest (never the password).
        A known verdict is given at once, never behind other requests' bcrypt;
        None (busy: the caller answers 503) when CHECKS requests are being
        checked already: a request waiting for its check holds its connection,
        and wrong passwords must not hold them all."""
        import base64
        import binascii

        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(token.strip(), validate=True) \
                .decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        if not sep:
            return False
        hashed = self.users.get(user)
        key = hashlib.sha256(b"\0".join((user.encode(), hashed or b"", password.encode()))
                             ).digest()
        if key in self._good or key in self._bad:
            return key in self._good
        if not self._checks.acquire(blocking=False):
            return None
        try:
            with self._lock:  # one bcrypt at a time, as the toolkit does
                import bcrypt

                try:
                    good = bcrypt.checkpw(password.encode(), hashed or _DUMMY_HASH)
                except ValueError:
                    good = False
                verdict = good and hashed is not None
                cache = self._good if verdict else self._bad
                if len(cache) >= 256:
                    cache.clear()
                cache.add(key)
        finally:
            self._checks.release()
        return verdict


class RateLimiter:
    """A token bucket: ``burst`` requests at once, one more every ``interval``
    seconds (golang.org/x/time/rate's Limiter, as the toolkit uses it)."""

    def __init__(self, interval: float, burst: int) -> None:
        self.interval, self.burst = interval, burst
        self.tokens = float(burst)
        self.at = time.monotonic()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self.tokens = min(float(self.burst), self.tokens + (now - self.at) / self.interval)
            self.at = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False


def load(path: str) -> WebConfig:
    """The web configuration in ``path``; one UsageError naming every problem."""
    from apache_metrics_exporter.trust import read_trusted

    try:
        data = read_trusted(path, OPTION)
    except OSError as exc:
        raise UsageError(f"cannot read {OPTION} {path}: {exc.strerror}") from None
    tree = _parse_yaml(path, data)
    problems: List[str] = []
    config = WebConfig()
    base = os.path.dirname(os.path.abspath(path))
    if not isinstance(tree, dict):
        if tree is not None:
            raise UsageError(f"{OPTION} {path}: expected a mapping of keys "
                             f"({', '.join(_TOP_KEYS)})")
        tree = {}
    unknown: List[str] = []
    _unknown(tree, _TOP_KEYS, "", unknown)
    tls = _section(tree, "tls_server_config", problems)
    http = _section(tree, "http_server_config", problems)
    _unknown(tls, _TLS_KEYS, "tls_server_config.", unknown)
    _unknown(http, _HTTP_KEYS, "http_server_config.", unknown)
    _headers(config, http, problems)
    _users(config, tree, problems)
    _rate_limit(config, tree, problems, unknown)
    if unknown:
        problems.insert(0, f"unknown key{'s' if len(unknown) > 1 else ''} "
                           f"{', '.join(unknown)} (not in exporter-toolkit's web "
                           "configuration)")
    if not problems:
        _tls(config, tls, base, problems)
    if problems:
        raise UsageError(f"{OPTION} {path}: {'; '.join(problems)}")
    return config


def _parse_yaml(path: str, data: bytes) -> Any:
    """YAML's safe subset; a key given twice is an error (as Go's UnmarshalStrict)."""
    try:
        import yaml
    except ImportError:
        raise UsageError(f"{OPTION} needs the Python module yaml (Debian: apt install "
                         "python3-yaml; pip install pyyaml)") from None

    class Strict(yaml.SafeLoader):
        pass

    def mapping(loader: Any, node: Any, deep: bool = False) -> Dict[Any, Any]:
        out: Dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in out:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {str(key)[:40]!r} given twice", key_node.start_mark)
            out[key] = loader.construct_object(value_node, deep=deep)
        return out

    Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        return yaml.load(data.decode("utf-8"), Loader=Strict)  # noqa: S506 - SafeLoader
    except UnicodeDecodeError:
        raise UsageError(f"{OPTION} {path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        what = getattr(exc, "problem", None) or "not YAML"
        raise UsageError(f"{OPTION} {path}: {where}{what}") from None


def _unknown(tree: Dict[str, Any], known: Tuple[str, ...], prefix: str,
             unknown: List[str]) -> None:
    """Collect the keys of ``tree`` that are not ``known`` (reported together)."""
    from apache_metrics_exporter.log import printable

    unknown.extend(prefix + printable(str(k))[:60] for k in tree if k not in known)


def _section(tree: Dict[str, Any], name: str, problems: List[str]) -> Dict[str, Any]:
    value = tree.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{name}: expected a mapping")
        return {}
    return value


def _text(tls: Dict[str, Any], key: str, problems: List[str]) -> str:
    value = tls.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        problems.append(f"tls_server_config.{key}: expected a string")
        return ""
    return value


def _strings(tls: Dict[str, Any], key: str, problems: List[str]) -> Optional[List[str]]:
    value = tls.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"tls_server_config.{key}: expected a list of strings")
        return None
    return value


def _headers(config: WebConfig, http: Dict[str, Any], problems: List[str]) -> None:
    if "http2" in http and not isinstance(http["http2"], bool):
        problems.append("http_server_config.http2: expected true or false")
    headers = http.get("headers") or {}
    if not isinstance(headers, dict):
        problems.append("http_server_config.headers: expected a mapping")
        return
    for name, value in headers.items():
        if name not in HEADERS:
            problems.append(f"http_server_config.headers: {str(name)[:60]!r} cannot be set "
                            f"(only {', '.join(HEADERS)})")
            continue
        allowed = HEADERS[name]
        if not isinstance(value, str) or "\n" in value or "\r" in value or (
                allowed is not None and value not in allowed):
            want = " or ".join(allowed) if allowed else "one line of text"
            problems.append(f"http_server_config.headers.{name}: expected {want}")
            continue
        if value:  # blank: unset
            config.headers.append((name, value))


def _users(config: WebConfig, tree: Dict[str, Any], problems: List[str]) -> None:
    users = tree.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        problems.append("basic_auth_users: expected a mapping of user: bcrypt hash")
        return
    for user, hashed in users.items():
        if not isinstance(user, str) or not isinstance(hashed, str) or not _is_bcrypt(hashed):
            shown = str(user)[:40] if isinstance(user, str) else "a user"
            problems.append(f"basic_auth_users.{shown}: not a bcrypt hash (make one with "
                            "htpasswd -nBC 10 '' | tr -d ':\\n'; the value is not shown)")
            continue
        config.users[user] = hashed.encode("ascii")
    if config.users:
        try:
            import bcrypt  # noqa: F401 - at start, not at the first scrape
        except ImportError:
            problems.append("basic_auth_users needs the Python module bcrypt (Debian: apt "
                            "install python3-bcrypt; pip install bcrypt)")


def _is_bcrypt(text: str) -> bool:
    """``$2a$``/``$2b$``/``$2y$``, a cost of 04 to 31 and 53 characters."""
    parts = text.split("$")
    return (len(parts) == 4 and parts[0] == "" and parts[1] in ("2a", "2b", "2y")
            and len(parts[2]) == 2 and parts[2].isdigit() and 4 <= int(parts[2]) <= 31
            and len(parts[3]) == 53 and set(parts[3]) <= _BCRYPT_ALPHABET)


def _rate_limit(config: WebConfig, tree: Dict[str, Any], problems: List[str],
                unknown: List[str]) -> None:
    section = _section(tree, "rate_limit", problems)
    _unknown(section, ("interval", "burst"), "rate_limit.", unknown)
    interval, burst = section.get("interval", 0), section.get("burst", 0)
    if isinstance(interval, bool) or not isinstance(interval, (int, str)):
        problems.append("rate_limit.interval: expected a duration, e.g. 1s")
        return
    if isinstance(interval, int):
        seconds = interval / 1e9  # a bare number: nanoseconds (Go's time.Duration)
    else:
        from apache_metrics_exporter.units import parse_timespan

        try:
            seconds = parse_timespan(interval)
        except ValueError as exc:
            problems.append(f"rate_limit.interval: {exc}")
            return
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 0:
        problems.append("rate_limit.burst: expected a whole number, 0 or more")
        return
    if seconds > 0:
        config.limiter = RateLimiter(seconds, burst)


def _tls(config: WebConfig, tls: Dict[str, Any], base: str, problems: List[str]) -> None:
    """The server's SSLContext, when the section turns TLS on (the toolkit's IsEnabled)."""
    texts = {k: _text(tls, k, problems) for k in (
        "cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type",
        "client_ca_file", "min_version", "max_version")}
    ciphers = _strings(tls, "cipher_suites", problems)
    curves = _strings(tls, "curve_preferences", problems)
    config.allowed_sans = _strings(tls, "client_allowed_sans", problems)
    prefer = tls.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        problems.append("tls_server_config.prefer_server_cipher_suites: expected true or false")
    enabled = any(texts[k] for k in ("cert", "key", "client_ca", "cert_file", "key_file",
                                     "client_ca_file", "client_auth_type"))
    if not enabled:
        if any(k in tls for k in ("min_version", "max_version", "cipher_suites",
                                  "curve_preferences", "client_allowed_sans")):
            problems.append("tls_server_config: no cert_file (or cert): TLS settings "
                            "without a certificate")
        return
    for key in ("cert", "key"):
        if not texts[key + "_file"] and not texts[key]:
            problems.append(f"tls_server_config: missing one of {key} or {key}_file")
        elif texts[key + "_file"] and texts[key]:
            problems.append(f"tls_server_config: give {key} or {key}_file, not both")
    auth = texts["client_auth_type"]
    if auth not in CLIENT_AUTH:
        problems.append(f"tls_server_config.client_auth_type: unknown {auth[:40]!r} (one of "
                        f"{', '.join(a for a in CLIENT_AUTH if a)})")
    elif auth in ("RequireAnyClientCert", "RequireClientCert"):
        problems.append(f"tls_server_config.client_auth_type {auth}: a certificate nobody "
                        "verifies proves nothing; use RequireAndVerifyClientCert with "
                        "client_ca_file")
    has_ca = bool(texts["client_ca_file"] or texts["client_ca"])
    if has_ca and auth in ("", "NoClientCert", "RequestClientCert"):
        problems.append("tls_server_config: client CAs are given without a client_auth_type "
                        "that verifies (VerifyClientCertIfGiven, RequireAndVerifyClientCert)")
    if auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert") and not has_ca:
        problems.append(f"tls_server_config.client_auth_type {auth} needs client_ca_file "
                        "(or client_ca)")
    versions = []
    for key, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        value = texts[key] or default
        if value not in TLS_VERSIONS:
            problems.append(f"tls_server_config.{key}: unknown TLS version {value[:20]!r} "
                            f"(one of {', '.join(TLS_VERSIONS)})")
        versions.append(value)
    for name in ciphers or ():
        if name not in CIPHERS:
            problems.append(f"tls_server_config.cipher_suites: unknown cipher {name[:60]!r}")
    for name in curves or ():
        if name not in CURVES:
            problems.append(f"tls_server_config.curve_preferences: unknown curve "
                            f"{name[:40]!r} (one of {', '.join(CURVES)})")
    if problems:
        return
    try:
        config.ssl_context = _context(texts, base, versions, ciphers, curves, bool(prefer))
    except UsageError as exc:
        problems.append(str(exc))


def _context(texts: Dict[str, str], base: str, versions: List[str],
             ciphers: Optional[List[str]], curves: Optional[List[str]], prefer: bool) -> Any:
    import ssl

    from apache_metrics_exporter.collect.http import no_passphrase, tls_file_problem

    def file_of(key: str) -> str:
        path = os.path.join(base, texts[key])
        why = tls_file_problem(path, f"tls_server_config.{key}")
        if why:  # a FIFO would block ssl's own open for ever
            raise UsageError(why)
        return path

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = getattr(ssl.TLSVersion, "TLSv1" if versions[0] == "TLS10" else
                                  "TLSv1_" + versions[0][-1])
    ctx.maximum_version = getattr(ssl.TLSVersion, "TLSv1" if versions[1] == "TLS10" else
                                  "TLSv1_" + versions[1][-1])
    if ctx.minimum_version > ctx.maximum_version:
        raise UsageError("tls_server_config: min_version is above max_version")
    inline: List[int] = []
    try:
        cert = file_of("cert_file") if texts["cert_file"] else _memfile(texts["cert"], inline)
        key = file_of("key_file") if texts["key_file"] else _memfile(texts["key"], inline)
        ctx.load_cert_chain(cert, key, password=no_passphrase)
        if texts["client_ca_file"]:
            ctx.load_verify_locations(cafile=file_of("client_ca_file"))
        elif texts["client_ca"]:
            ctx.load_verify_locations(cadata=texts["client_ca"])
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise UsageError("tls_server_config: cannot load the certificate, key or client CA: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None
    finally:
        for fd in inline:
            os.close(fd)
    ctx.verify_mode = {"VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                       "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}.get(
                           texts["client_auth_type"], ssl.CERT_NONE)
    wanted = [CIPHERS[c] for c in ciphers or () if CIPHERS[c]]
    if wanted:
        try:
            ctx.set_ciphers(":".join(wanted))
        except ssl.SSLError:
            raise UsageError("tls_server_config.cipher_suites: none of them is available in "
                             "this OpenSSL") from None
    if curves:
        ctx.set_ecdh_curve(CURVES[curves[0]])
    if prefer:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


def _memfile(text: str, fds: List[int]) -> str:
    """A path for inline PEM text that never touches a disk (memfd)."""
    fd = os.memfd_create("web-config-pem", getattr(os, "MFD_CLOEXEC", 0))
    fds.append(fd)
    os.write(fd, text.encode("utf-8"))
    return f"/proc/self/fd/{fd}"


def peer_allowed(sock: Any, allowed: List[str]) -> bool:
    """client_allowed_sans: the client certificate has a SAN (DNS, IP, e-mail or
    URI) that is exactly one of ``allowed``."""
    import ipaddress

    cert = sock.getpeercert() or {}
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "IP Address":
            try:
                value = str(ipaddress.ip_address(value.strip()))
            except ValueError:
                continue
        if value in allowed:
            return True
    return False
