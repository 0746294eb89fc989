"""The exception types that end a run with one line on stderr instead of a traceback, the trial
user attr that keeps a failed trial's reason, and a storage URL as those lines may show it."""

# Trial user attr: why a failed trial failed, in one line (the gate on NaN signals, a stop, a
# lost heartbeat, an unreachable storage). Only failed trials have it.
FAIL_REASON = "fail_reason"


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


def safe_url(url: str) -> str:
    """The URL with its passwords replaced by ***, for messages and logs: the userinfo password,
    secret query parameters (``?password=``) and every password registered in
    :mod:`hpsearch.secrets`."""
    from hpsearch.secrets import redact_url

    return redact_url(url)
