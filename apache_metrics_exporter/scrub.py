"""The run's secrets, and text from peers with every form of them replaced.

A status server, a proxy or InfluxDB may echo what it was sent - the
``Authorization`` header in a reason phrase or an error body - and that text
is printed on stderr and kept in ``quarantine/*.error``. Every secret the run
knows (HTTP password, InfluxDB token and password, --listen password, the
values of secret-looking --header options) is registered here once, when the
options are read; ``scrub()`` then replaces, in any text from a peer:

- the secret itself, its percent-encodings (hex digits in either case, ``+``
  or ``%20`` for a space) and its UTF-8 bytes read as Latin-1;
- ``USER:SECRET`` for every known user, raw and percent-encoded, and its
  base64 (standard or URL-safe alphabet, any padding: ``=``, ``==``, none,
  ``%3D``) - the ``Basic`` header value;
- ``Token SECRET`` and ``Bearer SECRET`` (header values);
- any ``Basic <base64>`` whose base64 decodes to ``NAME:PASSWORD``, known or
  not;
- the user information of any URL (``scheme://user:pass@host`` and its
  percent-encoded form ``scheme%3A%2F%2Fuser%3Apass%40host``), as ``***@``.

Short secrets: a secret is replaced wherever it appears only from
``FREE_LENGTH`` characters on. Replacing a one-letter password in every
message would turn the messages into nonsense, and the places where ``***``
lands would spell the password out. A shorter one is replaced only in its
exact composed forms (``USER:SECRET`` and its base64, the header values, URL
user information), and only where such a form stands on its own: not inside
a longer word of letters and digits.
"""

from __future__ import annotations

import re

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Dict, List, Optional, Pattern, Set, Tuple

FREE_LENGTH = 8  # secrets this long or longer are replaced wherever they appear
MASK = "***"
# Header names whose values are credentials (--header): a name containing one
# of these words.
SECRET_HEADER_WORDS = ("auth", "token", "key", "secret", "passw", "cookie", "session",
                       "credential", "signature")

_secrets: Set[str] = set()
_users: Set[str] = set()
# (key, pattern) of every form, longest first; the pattern can only match
# where its key (case-folded) is in the case-folded text - a quick substring test
# that spares the regular expression most of its work.
_table: Optional[List[Tuple[str, str]]] = None
_compiled: Dict[Tuple[str, ...], Pattern[str]] = {}
_fixed: List[Pattern[str]] = []  # compiled at first use: a run that logs nothing pays nothing

# scheme://USERINFO@ (USERINFO up to the last @ before the host's end), and
# the same percent-encoded, as a URL inside a query string is (/probe?target=);
# a Basic credential.
# The scheme is looked for only at the start of a word, and is short: from
# every letter of a long word it would be a quadratic scan.
_USERINFO = r"(?<![A-Za-z0-9+.-])([A-Za-z][A-Za-z0-9+.-]{0,31}://)[^\s/?#@]*(?:@[^\s/?#@]*)*@"
_USERINFO_ENCODED = r"(?i)(%3A%2F%2F)(?:(?!%2F|%3F|%23)[^\s/?#&@])*(%40|@)"
# The space after Basic may come percent-encoded (%20) or as a form's '+'
# when a peer puts the whole header value into a URL; so may the base64's
# own + / = (%2B %2F %3D).
_BASIC = (r"(?i)(\bBasic(?:\s|%20|\+)+)((?:[A-Za-z0-9_-]|\+|/|%2B|%2F){4,}"
          r"(?:=|%3D){0,2})")


def add_secret(value: Optional[str]) -> None:
    """Register a secret (a password, a token): its forms are scrubbed."""
    global _table
    if value and value not in _secrets:
        _secrets.add(value)
        _table = None


def add_user(name: Optional[str]) -> None:
    """Register a user name: ``name:SECRET`` of every secret is scrubbed."""
    global _table
    if name and name not in _users:
        _users.add(name)
        _table = None


def add_credentials(user: Optional[str], password: Optional[str]) -> None:
    """Register a user and its password."""
    add_user(user)
    add_secret(password)


def is_secret_header(name: str) -> bool:
    """Whether a request header's value is a credential, by its name."""
    lowered = name.lower()
    return any(word in lowered for word in SECRET_HEADER_WORDS)


def add_header(name: str, value: str) -> None:
    """Register the value of a request header if its name says it is a
    credential: the whole value, the credential after a scheme word
    (``Bearer X``), the user and password inside ``Basic <base64>``, and each
    value of a ``Cookie``."""
    if not is_secret_header(name) or not value.strip():
        return
    value = value.strip()
    add_secret(value)
    scheme, _, credential = value.partition(" ")
    credential = credential.strip()
    if credential:
        add_secret(credential)
        if scheme.lower() == "basic":
            user, sep, password = _b64decode(credential).partition(":")
            if sep:
                add_credentials(user, password)
    if "cookie" in name.lower():
        for part in value.split(";"):
            add_secret(part.partition("=")[2].strip())


def reset() -> None:
    """Forget every secret (tests)."""
    global _table
    _secrets.clear()
    _users.clear()
    _table = None


def scrub(text: str) -> str:
    """``text`` with every known form of every registered secret, any basic-auth
    credential and any URL user information replaced by ``***``."""
    if not text:
        return text
    if _secrets:
        lowered = text.casefold()
        active = tuple(p for key, p in _forms_table() if key in lowered)
        if active:
            pattern = _compiled.get(active)
            if pattern is None:
                if len(_compiled) > 64:
                    _compiled.clear()
                pattern = _compiled[active] = re.compile("|".join(active))
            text = pattern.sub(MASK, text)
    if not _fixed:
        _fixed[:] = [re.compile(p) for p in (_BASIC, _USERINFO, _USERINFO_ENCODED)]
    basic, userinfo, encoded = _fixed
    text = basic.sub(_basic, text)
    if "@" in text or "%40" in text.upper():
        text = userinfo.sub(r"\1" + MASK + "@", text)
        text = encoded.sub(r"\1" + MASK + r"\2", text)
    return text


def _basic(match: re.Match) -> str:
    """A ``Basic <base64>`` whose base64 decodes to NAME:PASSWORD, masked."""
    decoded = _b64decode(match.group(2))
    return match.group(1) + MASK if ":" in decoded else match.group(0)


def _b64decode(text: str) -> str:
    import base64
    import binascii

    text = re.sub("(?i)%3D", "=", text).rstrip("=")
    text = re.sub("(?i)%2B", "+", re.sub("(?i)%2F", "/", text))
    text = text.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4)).decode("utf-8")
    except (binascii.Error, ValueError):
        return ""


def _forms_table() -> List[Tuple[str, str]]:
    global _table
    table = _table
    if table is None:
        forms: Set[Tuple[str, str]] = set()
        for secret in _secrets:
            forms.update(_forms(secret))
        # Longest first: the alternation takes the first that matches, and a
        # secret must not leave the rest of a longer form (its base64) behind.
        table = _table = sorted(forms, key=lambda f: (-len(f[0]), f[1]))
    return table


def _forms(secret: str) -> List[Tuple[str, str]]:
    """(key, regular expression) of every form of ``secret`` that is replaced."""
    out: List[Tuple[str, str]] = []
    if len(secret) >= FREE_LENGTH:
        out += [(f.casefold(), _literal(f)) for f in _encodings(secret)]
        out += _base64(secret)
    else:  # a token sent as basic auth (--influxdb-auth-basic)
        out += [(key, r"(?<![A-Za-z0-9])(?i:basic)\s+" + pattern)
                for key, pattern in _base64(secret)]
    out.append((secret.casefold(), _standalone(r"(?i:token|bearer)\s+" + _literal(secret))))
    for user in _users:
        pair = f"{user}:{secret}"
        out += [(f.casefold(), _standalone(_literal(f))) for f in _encodings(pair)]
        out += _base64(pair)
    return out


def _encodings(text: str) -> Set[str]:
    """``text`` raw, percent-encoded the ways clients encode it, and its UTF-8
    read as Latin-1 (how a reason phrase echoing its bytes is decoded)."""
    from urllib.parse import quote, quote_plus

    return {text, quote(text, safe=""), quote(text), quote_plus(text, safe=""),
            quote(text, safe="!$&'()*+,;=:"),
            text.encode("utf-8", "replace").decode("latin-1")}


def _literal(form: str) -> str:
    """``form`` as a pattern, its %XX escapes matched in either case."""
    pattern = re.escape(form)
    return re.sub(r"%([0-9A-F])([0-9A-F])",
                  lambda m: "%" + "".join(f"[{c}{c.lower()}]" if c.isalpha() else c
                                          for c in m.groups()),
                  pattern)


def _standalone(pattern: str) -> str:
    """``pattern``, matched only where it is not part of a longer word."""
    return rf"(?<![A-Za-z0-9]){pattern}(?![A-Za-z0-9])"


def _base64(text: str) -> List[Tuple[str, str]]:
    """Base64 of ``text`` (standard or URL-safe alphabet, plain or with its
    ``+ / =`` percent-encoded), any padding, standing on its own."""
    import base64

    raw = base64.b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")
    variants = {raw, raw.replace("+", "-").replace("/", "_"),
                raw.replace("+", "%2B").replace("/", "%2F")}
    # Standing on its own: after a non-base64 character, or after a
    # percent-escape or the '+' of "Basic+" (a whole header value put into a
    # URL: Basic%20<base64>, Basic+<base64>).
    before = r"(?:(?<![A-Za-z0-9+/])|(?<=%[0-9A-Fa-f]{2})|(?<=[Bb][Aa][Ss][Ii][Cc]\+))"
    return [(v.casefold(), rf"{before}{_literal(v)}(?:=|%3[dD])*(?![A-Za-z0-9+/])")
            for v in sorted(variants)]
