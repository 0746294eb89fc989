"""The exception types that end a run with one line on stderr instead of a traceback (and which
errors mean a full disk), and a storage URL as those lines may show it."""

import errno


class HpsearchError(Exception):
    """A bad input: a config value, a data path, a storage URL, a checkpoint.

    The message is one line that names the problem and what is allowed. The command line turns
    it into that line on stderr and exit code ``exit_code`` (2), before anything is written to a
    study.
    """

    exit_code = 2


class ConfigError(HpsearchError):
    """A composed config or search space that fails validation; the message names the key."""


class StorageUnreachable(HpsearchError):
    """The study's storage stopped answering for longer than ``storage.outage_timeout`` while a
    worker was running: the input was fine, the database was not (exit code 3)."""

    exit_code = 3


class DiskFull(StorageUnreachable):
    """The disk under the study's storage is full (a write failed with "No space left on
    device", SQLite's "database or disk is full", PostgreSQL's disk_full): the worker stops with
    one line and exit code 4; once there is space again, the same command goes on (the trial in
    progress is failed and re-queued, and resumes from its last checkpoint)."""

    exit_code = 4


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
DISK_FULL_TEXT = ("no space left on device", "database or disk is full", "disk quota exceeded")
DISK_FULL_SQLSTATE = "53100"  # PostgreSQL's disk_full


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err``, or an exception it was raised from, says a disk (or quota) is full."""
    seen: list[BaseException] = []
    while err is not None and err not in seen:
        seen.append(err)
        if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
            return True
        if getattr(err, "pgcode", None) == DISK_FULL_SQLSTATE:
            return True
        text = str(getattr(err, "orig", None) or err).lower()
        if any(s in text for s in DISK_FULL_TEXT):
            return True
        err = err.__cause__ or err.__context__
    return False


def safe_url(url: str) -> str:
    """The URL with its passwords replaced by ***, for messages and logs: the userinfo password,
    secret query parameters (``?password=``) and every password registered in
    :mod:`hpsearch.secrets`."""
    from hpsearch.secrets import redact_url

    return redact_url(url)
