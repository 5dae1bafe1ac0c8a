"""Training: SFT on agent traces (assistant-only loss) and a value model on search trees.

Importing this package is cheap; torch, TRL, peft and datasets load when a function that
needs them runs. `ValueModel` lives in `notebook_agent.models.value_model` (imports torch).
"""

from .chat_data import DatasetError, load_examples, trajectory_to_example
from .sft import LoraSettings, SFTResult, SFTSettings, read_meta, train_sft
from .templates import FAMILIES, detect_family, inference_template, load_template
from .value_data import ValueExample, load_value_examples, read_tree, tree_examples
from .value_train import ValueResult, ValueSettings, train_value

__all__ = ["FAMILIES", "DatasetError", "LoraSettings", "SFTResult", "SFTSettings", "ValueExample", "ValueResult",
           "ValueSettings", "detect_family", "inference_template", "load_examples", "load_template",
           "load_value_examples", "read_meta", "read_tree", "train_sft", "train_value", "trajectory_to_example",
           "tree_examples"]
