"""The value model lives in `notebook_agent.models.value_model` (search loads it at inference;
inference never imports train/). Kept here as a name for training code and old imports."""

from ..models.value_model import CONFIG_FILE, HEAD_FILE, ValueModel, ValueModelConfig

__all__ = ["CONFIG_FILE", "HEAD_FILE", "ValueModel", "ValueModelConfig"]
