"""text-generation: prompts or chat messages -> `model.generate` -> HF's {"generated_text": ...} records."""

import numpy as np

from .base import Pipeline

_GENERATE_ARGS_NOT_FOR_GENERATE = ("return_full_text", "return_text", "return_tensors", "clean_up_tokenization_spaces",
                                   "prefix", "add_special_tokens", "continue_final_message")


class TextGenerationPipeline(Pipeline):
    """Each prompt gives a list of {"generated_text"}: the prompt plus its continuation (`return_full_text=False`:
    the continuation only); a chat (a list of {"role", "content"}) gives the chat with the assistant's reply
    appended. Extra keyword arguments go to `generate` (max_new_tokens, do_sample, num_return_sequences...)."""

    task = "text-generation"

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

    def _generate(self, p):
        kwargs = dict(self._generate_kwargs)
        if "pad_token_id" not in kwargs and getattr(self.model.generation_config, "pad_token_id", None) is None:
            kwargs["pad_token_id"] = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None \
                else self.tokenizer.eos_token_id
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
