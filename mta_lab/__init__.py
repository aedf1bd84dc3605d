"""mta-lab: a research platform for Multi-Token Attention and attention-variant language models."""

__version__ = "0.1.0"
