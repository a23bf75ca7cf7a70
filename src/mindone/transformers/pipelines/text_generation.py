"""text-generation: prompts or chat messages -> `model.generate` -> HF's {"generated_text": ...} records."""

import copy

import numpy as np

from .base import Pipeline

# HF's text-generation pipeline defaults, used for what neither the call nor the model's generation config sets
GENERATION_DEFAULTS = {"max_new_tokens": 256, "do_sample": True, "temperature": 0.7}
# defaults that only apply when sampling (generate() warns about them otherwise)
_SAMPLING_PARAMS = {"temperature", "top_k", "top_p", "min_p", "top_h", "typical_p", "epsilon_cutoff", "eta_cutoff"}

_GENERATE_ARGS_NOT_FOR_GENERATE = ("return_full_text", "return_text", "return_tensors", "clean_up_tokenization_spaces",
                                   "prefix", "add_special_tokens", "continue_final_message")


class TextGenerationPipeline(Pipeline):
    """Each prompt gives a list of {"generated_text"}: the prompt plus its continuation (`return_full_text=False`:
    the continuation only); a chat (a list of {"role", "content"}) gives the chat with the assistant's reply
    appended. Extra keyword arguments go to `generate` (max_new_tokens, do_sample, num_return_sequences...).

    As HF's, unless the call or the model's `generation_config` (its non-default entries) sets them, generation uses
    max_new_tokens=256, do_sample=True, temperature=0.7, and the tokenizer's pad token."""

    task = "text-generation"
    generation_defaults = GENERATION_DEFAULTS

    def __call__(self, inputs, **kwargs):
        if _is_chat(inputs):
            return super().__call__([inputs], **kwargs)[0]
        if isinstance(inputs, (list, tuple)) and inputs and all(_is_chat(x) for x in inputs):
            return super().__call__(list(inputs), **kwargs)
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(self, return_full_text=None, return_tensors=False, clean_up_tokenization_spaces=None,
                             prefix="", add_special_tokens=None, continue_final_message=None, **generate_kwargs):
        pre = {"prefix": prefix, "add_special_tokens": add_special_tokens,
               "continue_final_message": continue_final_message}
        post = {"return_full_text": return_full_text, "return_tensors": return_tensors,
                "clean_up_tokenization_spaces": clean_up_tokenization_spaces}
        self._generate_kwargs = generate_kwargs
        return pre, post

    def preprocess(self, item, prefix="", add_special_tokens=None, continue_final_message=None):
        if _is_chat(item):
            final_is_assistant = item[-1]["role"] == "assistant"
            if continue_final_message is None:
                continue_final_message = final_is_assistant
            encoded = self.tokenizer.apply_chat_template(
                item, add_generation_prompt=not continue_final_message, continue_final_message=continue_final_message,
                tokenize=True, return_dict=True, return_tensors="np")
            prompt = item
        else:
            kwargs = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
            encoded = self.tokenizer(prefix + item, return_tensors="np", **kwargs)
            prompt = item
        return {"input_ids": np.asarray(encoded["input_ids"]), "attention_mask": np.asarray(encoded["attention_mask"]),
                "prompt": prompt, "prefix_length": len(prefix)}

    def _run_group(self, prepared):
        # prompts of different lengths are generated one at a time (left padding would change nothing but speed)
        return [self._generate(p) for p in prepared]

    def generate_kwargs(self, **kwargs):
        """What `generate` gets for a call with generation arguments `kwargs`: those, plus the pipeline defaults
        (GENERATION_DEFAULTS, the tokenizer's pad id) for what neither they nor the model's generation config set;
        the sampling defaults only when sampling. A `generation_config` argument gets the defaults in a copy."""
        user_config = kwargs.get("generation_config")
        set_params = self.model.generation_config.to_diff_dict()
        if user_config is not None:
            set_params.update(user_config.to_diff_dict())
        set_params.update(kwargs)
        defaults = dict(self.generation_defaults)
        if getattr(self.tokenizer, "pad_token_id", None) is not None:
            defaults["pad_token_id"] = self.tokenizer.pad_token_id
        # a default max_new_tokens would override a max_length that is set
        added = {k: v for k, v in defaults.items()
                 if k not in set_params and not (k == "max_new_tokens" and "max_length" in set_params)}
        if not {**set_params, **added}.get("do_sample"):
            added = {k: v for k, v in added.items() if k not in _SAMPLING_PARAMS}
        if user_config is None:
            return {**kwargs, **added}
        user_config = copy.deepcopy(user_config)
        user_config.update(**added)
        return {**kwargs, "generation_config": user_config}

    def _generate(self, p):
        kwargs = self.generate_kwargs(**self._generate_kwargs)
        out = self.model.generate(p["input_ids"], attention_mask=p["attention_mask"], **kwargs)
        sequences = out if not hasattr(out, "sequences") else out.sequences
        sequences = sequences.asnumpy() if hasattr(sequences, "asnumpy") else np.asarray(sequences)
        return dict(p, sequences=sequences)

    def postprocess(self, out, return_full_text=None, return_tensors=False, clean_up_tokenization_spaces=None):
        prompt = out["prompt"]
        chat = _is_chat(prompt)
        if return_full_text is None:
            return_full_text = True
        records = []
        for sequence in out["sequences"]:
            if return_tensors:
                records.append({"generated_token_ids": sequence.tolist()})
                continue
            # the new tokens decoded on their own, as HF 5 does (decoding the whole sequence and cutting the decoded
            # prompt's length off differs for SentencePiece tokenizers, whose decode drops a leading space)
            completion = self.tokenizer.decode(sequence[out["input_ids"].shape[-1]:], skip_special_tokens=True,
                                               clean_up_tokenization_spaces=clean_up_tokenization_spaces)
            if chat:
                if return_full_text:
                    if prompt[-1]["role"] == "assistant":
                        generated = [*prompt[:-1], {"role": "assistant",
                                                    "content": prompt[-1]["content"] + completion}]
                    else:
                        generated = [*prompt, {"role": "assistant", "content": completion}]
                else:
                    generated = completion
            else:
                generated = prompt + completion if return_full_text else completion
            records.append({"generated_text": generated})
        return records


def _is_chat(x):
    return isinstance(x, (list, tuple)) and len(x) > 0 and isinstance(x[0], dict) and "role" in x[0]
