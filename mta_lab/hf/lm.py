"""`HFLanguageModel`: a transformers causal LM behind the native model's interface (tokens -> logits), so the
Lightning module, its loss, optimizer groups and checkpoints handle it like the Transformer of model/transformer.py."""

from __future__ import annotations

from torch import Tensor, nn

from mta_lab.attention.spec import AttentionSpec


class HFLanguageModel(nn.Module):
    def __init__(self, hf_model) -> None:
        super().__init__()
        self.hf = hf_model

    @classmethod
    def load(cls, path: str, spec: AttentionSpec | None) -> HFLanguageModel:
        from mta_lab.hf.checkpoint import load_model

        return cls(load_model(path, spec))

    def init_weights(self) -> None:
        """The weights are the checkpoint's (and the MTA parameters the spec's initialisation)."""

    def forward(self, tokens: Tensor, cache=None) -> Tensor:
        if cache is not None:
            raise ValueError("HFLanguageModel has no native decoding cache: use self.hf.generate")
        return self.hf(input_ids=tokens, use_cache=False).logits

    def save_pretrained(self, path) -> None:
        from mta_lab.hf.checkpoint import save_model

        save_model(self.hf, path)
