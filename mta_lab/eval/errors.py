"""The evaluation's user errors: a bad option, a checkpoint that cannot run a setting, a file missing a field."""

from mta_lab.errors import UsageError


class EvalError(UsageError):
    """Bad input to `mta-lab eval`: the message names the option, file or checkpoint and the fix."""
