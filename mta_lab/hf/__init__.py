"""MTA in Hugging Face Llama models (the optional extra `hf`: transformers, safetensors).

`attach(model, spec)` adds the MTA parameters to each layer's attention module and switches it to the MTA op
(registered with transformers' attention-function and mask registries, `attention.register`); `load_model(path)`
loads a local checkpoint (a plain Llama: retrofit; one saved by `save_model`: its MTA tensors too). transformers
is imported only inside the functions that use it; `require_transformers` says what to install.
"""

from mta_lab.hf.attach import attach
from mta_lab.hf.checkpoint import load_model, save_model
from mta_lab.hf.requirements import HFError, require_transformers

__all__ = ["HFError", "attach", "load_model", "require_transformers", "save_model"]
