"""Language models behind one interface: `load_model(spec)` -> `ChatModel`."""

from .base import (
           ChatModel,
           Completion,
           ModelError,
           ParseError,
           SamplingParams,
           ToolCall,
           Usage,
)
from .resolve import default_model_name, load_model

__all__ = ["ChatModel", "Completion", "ModelError", "ParseError", "SamplingParams", "ToolCall", "Usage",
           "default_model_name", "load_model"]
