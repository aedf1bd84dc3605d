"""Put MTA into a transformers Llama model: `MTAParameters` on every layer's attention module, the "mta" attention
function switched on, the spec recorded in the model's config (`config.mta_attention`, saved in config.json)."""

from __future__ import annotations

from mta_lab.attention.spec import AttentionSpec
from mta_lab.hf.attention import ATTENTION_NAME, register
from mta_lab.hf.parameters import MTAParameters
from mta_lab.hf.requirements import HFError

CONFIG_KEY = "mta_attention"
SUPPORTED_KINDS = ("softmax", "mta", "talking_heads")


def check_llama(config) -> None:
    """Only the Llama architecture (Llama 2/3/3.1/3.2 checkpoints) is supported."""
    model_type = getattr(config, "model_type", None)
    if model_type != "llama":
        archs = ", ".join(getattr(config, "architectures", None) or []) or "unknown"
        raise HFError(f"model.path holds a {model_type!r} model (architectures: {archs}); model=hf supports the "
                      "Llama architecture only (config.json model_type 'llama', e.g. Llama 3.2 1B/3B, Llama 3.1 8B)")


def check_spec(spec: AttentionSpec, config) -> None:
    if spec.kind not in SUPPORTED_KINDS:
        raise HFError(f"attention.kind={spec.kind!r} cannot be put into a Hugging Face Llama (DIFF attention changes "
                      f"the projections); use one of {', '.join(SUPPORTED_KINDS)}")
    spec.check_model(n_heads=config.num_attention_heads, n_layers=config.num_hidden_layers)


def saved_spec(config) -> AttentionSpec | None:
    """The spec a model saved by `save_pretrained` after `attach` carries (None: a plain Llama checkpoint)."""
    saved = getattr(config, CONFIG_KEY, None)
    return AttentionSpec.from_dict(saved) if saved else None


def attach(model, spec: AttentionSpec) -> list[MTAParameters]:
    """Give each decoder layer's attention module `mta` parameters (the spec's initialisation, on the module's
    device and dtype) and switch the model to the "mta" attention function; returns the parameter modules.

    With a kq convolution over c_q > 1 query rows on some layer, `model.generation_config.use_cache` is set to
    False: `generate` then recomputes the full prefix for each token (see `mta_lab.hf.attention`).
    """
    config = model.config
    check_llama(config)
    check_spec(spec, config)
    layers = model.model.layers
    if any(hasattr(layer.self_attn, "mta") for layer in layers):
        raise HFError("this model already has MTA parameters; attach once (load_model does it for a saved model)")
    register()
    n_heads, n_layers = config.num_attention_heads, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    added = []
    for i, layer in enumerate(layers):
        attn = layer.self_attn
        weight = attn.q_proj.weight
        mta = MTAParameters(spec, n_heads=n_heads, head_dim=head_dim, hidden_size=config.hidden_size, layer_idx=i,
                            n_layers=n_layers)
        attn.mta = mta.to(device=weight.device, dtype=weight.dtype)
        added.append(attn.mta)
    setattr(config, CONFIG_KEY, spec.to_dict())
    model.set_attn_implementation(ATTENTION_NAME)
    if any(m.query_window > 1 for m in added):
        model.generation_config.use_cache = False
    return added
