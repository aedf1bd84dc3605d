"""Evaluation: metrics and evaluators on top of a trained model (plain PyTorch).

The toy-task names below load on first use, so that `mta_lab.eval.options` (the tasks' options, read by
`mta-lab eval --help` and by the train config) imports no torch."""

__all__ = ["ToyErrors", "evaluate_toy", "toy_error_rate"]


def __getattr__(name: str):
    if name in __all__:
        from mta_lab.eval import toy

        return getattr(toy, name)
    raise AttributeError(f"module 'mta_lab.eval' has no attribute {name!r}")
