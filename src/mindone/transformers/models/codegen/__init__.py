from .modeling_codegen import CodeGenForCausalLM, CodeGenModel, CodeGenPreTrainedModel
