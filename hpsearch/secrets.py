"""Secrets: the passwords a run knows of, and text, URLs and configs with them replaced by ***.

A storage URL (``storage.url``, ``pruner.prior_storage``) may carry a password in several forms:

* userinfo: ``postgresql+psycopg2://user:PASSWORD@host/db``;
* query parameters: ``...?password=PASSWORD`` (libpq's ``password``, ``sslpassword``; any key
  that names a password, secret or token);
* outside the URL: ``PGPASSWORD`` / ``PGSSLPASSWORD``, a ``.pgpass`` file (``PGPASSFILE``), or the
  whole URL in ``HPSEARCH_STORAGE_URL`` (the recommended form, docs/distributed.md#secrets).

Two layers keep them out of what a run prints and writes. :func:`redact` masks the *forms*
(userinfo passwords and secret ``key=value`` pairs in any text), and every password the run knows
(:func:`register`, from the URLs it was given and the environment) wherever it appears, also
URL-encoded. :func:`redact_output` puts that on every log record and on stdout and stderr, and
:func:`hide_secret_overrides` keeps a command-line URL with a password out of the files Hydra
writes (``.hydra/*.yaml``) and out of the worker command lines of the local launcher: the value
moves into this process's environment and the override reads it back with ``${oc.env:...}``.
"""

from __future__ import annotations

import io
import logging
import os
import re
import stat
from collections.abc import Iterable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote

MASK = "***"
# Known secrets shorter than this are masked only in their URL forms (masking every "ab" of a
# message would garble it); every form in a URL is masked whatever its length.
MIN_SECRET_CHARS = 4
# Environment variables that hold a password, and the prefix of those that hold a URL.
PASSWORD_ENV = ("PGPASSWORD", "PGSSLPASSWORD")
URL_ENV = ("HPSEARCH_STORAGE_URL",)
HIDDEN_ENV_PREFIX = "HPSEARCH_SECRET_"  # where hide_secret_overrides puts a URL with a password

# A query or DSN key whose value is a secret: password, sslpassword, passwd, pwd, secret, token.
_SECRET_KEY = r"[A-Za-z0-9_.\-]*(?:pass|pwd|secret|token)[A-Za-z0-9_.\-]*"
_SECRET_PARAM = re.compile(
    rf"(?P<key>\b{_SECRET_KEY})(?P<eq>\s*=\s*)(?P<value>[^&\s'\",;)\]}}]+)", re.I
)
# scheme://user:password@ (the password may hold anything but @ and white space)
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?P<at>@)")

_known: set[str] = set()


def register(secret: str | None) -> None:
    """Mask ``secret`` (and its URL-encoded forms) in everything :func:`redact` sees."""
    if not secret:
        return
    for form in (secret, unquote(secret), quote(secret, safe=""), quote_plus(secret)):
        if len(form) >= MIN_SECRET_CHARS:
            _known.add(form)


def url_secrets(url: str) -> list[str]:
    """The passwords in ``url``: its userinfo password and its secret query values."""
    found = [m.group("pw") for m in _USERINFO.finditer(url)]
    query = url.split("?", 1)[1] if "?" in url else ""
    found += [m.group("value") for m in _SECRET_PARAM.finditer(query)]
    return [unquote(s) for s in found if s and s != MASK]


def has_secret(value: str) -> bool:
    return bool(url_secrets(value))


def register_url(url: Any) -> None:
    for secret in url_secrets(str(url or "")):
        register(secret)


def pgpass_passwords(path: Path) -> list[str]:
    """The password field of every entry of a ``.pgpass`` file (``host:port:db:user:password``,
    ``\\:`` and ``\\\\`` escaped); none when it cannot be read."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    passwords = []
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = re.split(r"(?<!\\):", line, maxsplit=4)
        if len(fields) == 5:
            passwords.append(fields[4].replace("\\:", ":").replace("\\\\", "\\"))
    return passwords


def register_environment(env: MutableMapping[str, str] | None = None) -> None:
    """Register the secrets the environment provides: ``PGPASSWORD``, ``PGSSLPASSWORD``, the
    ``.pgpass`` file libpq reads, and the URLs in ``HPSEARCH_STORAGE_URL`` and
    ``HPSEARCH_SECRET_*``."""
    env = os.environ if env is None else env
    for key in PASSWORD_ENV:
        register(env.get(key))
    for key, value in env.items():
        if key in URL_ENV or key.startswith(HIDDEN_ENV_PREFIX):
            register_url(value)
    pgpass = env.get("PGPASSFILE") or str(Path(env.get("HOME", "~")).expanduser() / ".pgpass")
    for password in pgpass_passwords(Path(pgpass)):
        register(password)


def redact(text: str) -> str:
    """``text`` with every password form (userinfo, secret ``key=value``) and every registered
    secret replaced by ***."""
    if not text:
        return text
    text = _USERINFO.sub(lambda m: m.group("head") + MASK + m.group("at"), text)
    text = _SECRET_PARAM.sub(lambda m: m.group("key") + m.group("eq") + MASK, text)
    for secret in sorted(_known, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_url(url: str) -> str:
    """A URL as messages may show it: ``user:***@host``, ``?password=***``."""
    return redact(str(url))


def redact_tree(value: Any) -> Any:
    """A copy of a config tree (dicts, lists, scalars) with every string redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_tree(v) for v in value]
    return value


def hide_secret_overrides(argv: list[str], env: MutableMapping[str, str]) -> list[str]:
    """Command-line overrides with their passwords moved into ``env``: ``KEY=URL`` whose URL
    holds a password becomes ``KEY=${oc.env:HPSEARCH_SECRET_KEY}`` with the URL in that
    environment variable (registered as a secret). Hydra then records only the reference, and
    child processes inherit the value without it appearing on their command line."""
    hidden = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        name = key.lstrip("+~")
        if not eq or arg.startswith("-") or not has_secret(value):
            hidden.append(arg)
            continue
        register_url(value)
        var = HIDDEN_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", name).upper()
        env[var] = value
        hidden.append(f"{key}=${{oc.env:{var}}}")
    return hidden


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """The record with its message, traceback text and stack redacted (rendered once, here)."""
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: logging reports it itself
        return record
    record.msg, record.args = redact(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


class RedactingStream(io.TextIOBase):
    """A text stream that redacts what is written to it before passing it on."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def write(self, text: str) -> int:
        self.inner.write(redact(text))
        return len(text)

    def flush(self) -> None:
        self.inner.flush()

    def fileno(self) -> int:
        return self.inner.fileno()

    def isatty(self) -> bool:
        return self.inner.isatty()

    @property
    def encoding(self) -> str:
        return self.inner.encoding

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


_installed = False


def redact_output() -> None:
    """Redact every log record this process creates (whatever handler writes it: the terminal,
    Hydra's job log file) and everything written to stdout and stderr."""
    global _installed
    if _installed:
        return
    _installed = True
    factory = logging.getLogRecordFactory()

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(factory(*args, **kwargs))

    logging.setLogRecordFactory(make_record)
    import sys

    sys.stdout = RedactingStream(sys.stdout)
    sys.stderr = RedactingStream(sys.stderr)


def make_private(paths: Iterable[Path]) -> None:
    """chmod 0600 each file that exists (files that may hold a secret: logs, Hydra's records)."""
    for path in paths:
        try:
            if path.is_file():
                path.chmod(stat.S_IRUSR | stat.S_IWUSR)
        except OSError:
            pass


def open_private(path: Path, mode: str = "w") -> Any:
    """Open ``path`` for writing, created with mode 0600 (a file that may hold a secret)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, 0o600), mode)
