"""Errors that rulekit reports to users as one line and exit code 2."""


class RulekitError(Exception):
    """A user-facing error: bad input, a bad file, an unknown name. Never a bug in rulekit."""


class UnknownNameError(RulekitError):
    """A name that no installed plugin registers."""


class ParamsError(RulekitError):
    """A ``params.yaml`` value that is missing, of the wrong type or out of range."""


class DataFileError(RulekitError):
    """A file that rulekit reads is missing, truncated, corrupt or unsafe."""
