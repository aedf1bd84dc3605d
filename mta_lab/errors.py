"""The errors that are the user's to fix: bad input (a config, a spec, a file, a CLI argument, a storage URL).

Every such error subclasses `UserError`. The CLI catches `UserError` only: it prints the message (which names
the thing and the fix) and exits with status 2. Any other exception is a bug and keeps its traceback.
The domain errors live beside what they check (SpecError in attention/spec.py, DataConfigError in data/errors.py,
...); most keep ValueError or RuntimeError as a second base, so callers that catch those still do.

Imports nothing: every layer may raise these, and the CLI catches them without importing Lightning or MLflow.
"""


class UserError(Exception):
    """Bad input the user can fix; the message names the thing and what to do."""


class UsageError(UserError, ValueError):
    """A bad command-line argument or function argument (an option, a KEY=VALUE item, a device name)."""


class TrackingError(UserError, RuntimeError):
    """The tracking backend cannot be used; the message says which URI and what to do."""


class TrainingDiverged(UserError, RuntimeError):
    """The loss became NaN or infinite."""
