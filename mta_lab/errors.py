"""User-facing errors that are not bad config values (those subclass ValueError where they are defined).

Kept import-light so the CLI can catch them without importing Lightning or MLflow.
"""


class TrackingError(RuntimeError):
    """The tracking backend cannot be used; the message says which URI and what to do."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""
