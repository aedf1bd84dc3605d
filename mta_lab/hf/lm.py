"""`HFLanguageModel`: a transformers causal LM behind the native model's interface (tokens -> logits, `config`,
`new_cache()` and `forward(tokens, cache)`), so the Lightning module, its loss, optimizer groups and checkpoints,
`mta-lab eval` and `mta-lab generate` handle it like the Transformer of model/transformer.py."""

from __future__ import annotations

from torch import Tensor, nn

from mta_lab.attention.spec import AttentionSpec
from mta_lab.hf.decoding import HFDecodingCache


class HFLanguageModel(nn.Module):
    def __init__(self, hf_model, config) -> None:
        """`hf_model`: a LlamaForCausalLM with MTA attached; `config`: its `ModelConfig` (source "hf": sizes, the
        context `max_seq_len` that generation and the evals check against)."""
        super().__init__()
        self.hf = hf_model
        self.config = config

    @classmethod
    def load(cls, path: str, spec: AttentionSpec | None) -> HFLanguageModel:
        """The checkpoint directory `path` (`mta_lab.hf.load_model`: a plain Llama gets `spec` retrofitted; a saved
        model keeps its own spec)."""
        from mta_lab.hf.checkpoint import load_model, model_config_of

        return cls(load_model(path, spec), model_config_of(path))

    @property
    def spec(self) -> AttentionSpec:
        from mta_lab.hf.attach import saved_spec

        return saved_spec(self.hf.config)

    @property
    def decodes_by_recomputation(self) -> bool:
        """True when a layer's kq convolution reads c_q > 1 query rows: HF's KV cache keeps no past queries, so
        `new_cache()` decodes by recomputing the whole prefix for each token (`mta_lab.hf.decoding`)."""
        return self.hf.generation_config.use_cache is False

    def init_weights(self) -> None:
        """The weights are the checkpoint's (and the MTA parameters the spec's initialisation)."""

    def new_cache(self) -> HFDecodingCache:
        return HFDecodingCache(recompute=self.decodes_by_recomputation)

    def forward(self, tokens: Tensor, cache: HFDecodingCache | None = None) -> Tensor:
        if cache is not None:
            return cache.step(self.hf, tokens)
        return self.hf(input_ids=tokens, use_cache=False).logits

    def save_pretrained(self, path) -> None:
        from mta_lab.hf.checkpoint import save_model

        save_model(self.hf, path)
