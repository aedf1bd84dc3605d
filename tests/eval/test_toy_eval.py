"""toy_error_rate and evaluate_toy: a sample is wrong if ANY answer/EOS target's argmax is wrong (spec §5)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mta_lab.data import DataConfig, build_data
from mta_lab.eval import evaluate_toy, toy_error_rate


def _one_hot_logits(predictions: list[list[int]], vocab: int = 5) -> torch.Tensor:
    return nn.functional.one_hot(torch.tensor(predictions), vocab).float()


def test_error_rate_on_hand_made_logits():
    targets = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], [0, 0, 0, 0]])
    mask = torch.tensor([[0, 0, 1, 1]] * 4 + [[0, 0, 0, 0]], dtype=torch.bool)
    logits = _one_hot_logits([
        [1, 2, 3, 4],  # all right
        [0, 0, 3, 4],  # wrong only where the mask is off: right
        [1, 2, 3, 0],  # wrong at EOS: wrong
        [1, 2, 0, 0],  # wrong twice: one wrong sample
        [1, 1, 1, 1],  # no masked target (a padding row): not counted
    ])
    assert toy_error_rate(logits, targets, mask) == (2, 4)


def test_error_rate_uses_the_argmax_not_the_probability_of_the_target():
    logits = torch.tensor([[[0.0, 2.0, 1.9]], [[0.0, 1.0, 3.0]]])  # the target (2) is second-best, then best
    assert toy_error_rate(logits, torch.tensor([[2], [2]]), torch.ones(2, 1, dtype=torch.bool)) == (1, 2)


def test_error_rate_checks_shapes():
    with pytest.raises(ValueError, match="must be \\(B, T, V\\)"):
        toy_error_rate(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4, dtype=torch.bool))


class Oracle(nn.Module):
    """Knows every answer of a fixed set of batches; `wrong_eos` predicts PAD instead of EOS."""

    def __init__(self, batches, vocab: int, wrong_eos: bool = False) -> None:
        super().__init__()
        self.dropout = nn.Dropout(0.5)
        self.vocab, self.wrong_eos = vocab, wrong_eos
        self.answers = {tuple(row[:-1].tolist()): row[1:] for b in batches for row in b["tokens"]}

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        assert not self.training  # evaluate_toy evaluates in eval mode
        targets = torch.stack([self.answers[tuple(row.tolist())] for row in tokens]).clone()
        if self.wrong_eos:
            targets[:, -1] = self.vocab - 1
        return nn.functional.one_hot(targets, self.vocab).float()


def test_evaluate_toy_over_a_test_set():
    bundle = build_data(DataConfig(kind="toy", toy_variant="last", toy_test_samples=20), seq_len=1)
    batches = bundle.val_batches(8)["toy"]
    model = Oracle(batches, bundle.tokenizer.vocab_size)
    model.train()
    result = evaluate_toy(model, batches)
    assert (result.errors, result.samples, result.rate) == (0, 20, 0.0)
    assert model.training  # mode restored
    wrong = evaluate_toy(Oracle(batches, bundle.tokenizer.vocab_size, wrong_eos=True), batches)
    assert (wrong.errors, wrong.samples, wrong.rate) == (20, 20, 1.0)
    constant = evaluate_toy(lambda t: torch.zeros(*t.shape, bundle.tokenizer.vocab_size), batches)
    assert constant.rate == 1.0
