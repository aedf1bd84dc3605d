"""Data: tokenizers, the paper's toy task, text corpora packed into windows, and the trainer's contract.

Plain Python, numpy, torch and HF `datasets`; nothing here imports Lightning, Hydra or MLflow.

    from mta_lab.data import DataConfig, build_data
    bundle = build_data(DataConfig(), seq_len=256)   # the embedded Shakespeare corpus, byte tokenizer
    batch = bundle.train_batch(step, batch_size=32, seed=0, rank=rank, world_size=world)
    batch["tokens"]      # (32, 257) int64; the model reads tokens[:, :-1], targets are tokens[:, 1:]
    batch["loss_mask"]   # (32, 256) bool: which targets count
    bundle.val_batches(32)   # {"comedies": [batch, ...], "histories": [...], ...}
"""

from mta_lab.data.build import build_data
from mta_lab.data.bundle import Batch, DataBundle
from mta_lab.data.config import DataConfig, default_cache_dir
from mta_lab.data.errors import DataConfigError
from mta_lab.data.tokenizers import Tokenizer, load_tokenizer
from mta_lab.data.toy import ToyTask

__all__ = [
    "Batch",
    "DataBundle",
    "DataConfig",
    "DataConfigError",
    "Tokenizer",
    "ToyTask",
    "build_data",
    "default_cache_dir",
    "load_tokenizer",
]
