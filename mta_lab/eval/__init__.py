"""Evaluation: metrics and evaluators on top of a trained model (plain PyTorch)."""

from mta_lab.eval.toy import ToyErrors, evaluate_toy, toy_error_rate

__all__ = ["ToyErrors", "evaluate_toy", "toy_error_rate"]
