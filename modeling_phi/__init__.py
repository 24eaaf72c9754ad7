"""The phi-1 / phi-1.5 model. Importing this package registers it with transformers' Auto classes."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_phi import PRESETS, PhiConfig
from .modeling_phi import PhiForCausalLM, PhiModel, PhiPreTrainedModel

AutoConfig.register(PhiConfig.model_type, PhiConfig, exist_ok=True)
AutoModel.register(PhiConfig, PhiModel, exist_ok=True)
AutoModelForCausalLM.register(PhiConfig, PhiForCausalLM, exist_ok=True)
# save_pretrained copies configuration_phi.py / modeling_phi.py next to the weights and writes auto_map,
# so checkpoints load with trust_remote_code=True where this package is not installed.
PhiConfig.register_for_auto_class()
PhiModel.register_for_auto_class("AutoModel")
PhiForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["PRESETS", "PhiConfig", "PhiForCausalLM", "PhiModel", "PhiPreTrainedModel"]
