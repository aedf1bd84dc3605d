"""Model code: plain PyTorch (no Hydra, Lightning or MLflow below this package)."""

from mta_lab.model.config import MODEL_PRESETS, ModelConfig, load_model_preset
from mta_lab.model.transformer import Transformer, build_model

__all__ = ["MODEL_PRESETS", "ModelConfig", "Transformer", "build_model", "load_model_preset"]
