"""The one exception type that means "the user asked for something we cannot do"."""


class HpsearchError(Exception):
    """A bad input: a config value, a data path, a storage URL, a checkpoint.

    The message is one line that names the problem and what is allowed. The command line turns
    it into that line on stderr and exit code 2, before anything is written to a study.
    """


class ConfigError(HpsearchError):
    """A composed config or search space that fails validation; the message names the key."""
