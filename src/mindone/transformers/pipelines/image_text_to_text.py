"""image-text-to-text: chat messages with images (or images + a prompt) -> a vision-language model's `generate` ->
HF's {"input_text", "generated_text"} records, with the model's `transformers` processor."""

import numpy as np

from .text_generation import TextGenerationPipeline

_FULL_TEXT, _NEW_TEXT, _TENSORS = "full_text", "new_text", "tensors"
# the processor outputs the model reads (LLaVA-NeXT adds `image_sizes`; Qwen2-VL its patch grids and the token types
# that place the multimodal RoPE indices)
_MODEL_INPUTS = ("input_ids", "attention_mask", "pixel_values", "image_sizes", "image_grid_thw", "pixel_values_videos",
                 "video_grid_thw", "second_per_grid_ts", "mm_token_type_ids")


class ImageTextToTextPipeline(TextGenerationPipeline):
    """`pipe(text=messages)` (or `pipe(messages)`), where each message's content may hold
    `{"type": "image", "image" | "url" | "path": ...}` entries, gives [{"input_text": messages, "generated_text":
    messages + the assistant's reply}]; `pipe(images=..., text=prompt)` gives the prompt plus its continuation.
    `return_full_text=False` gives the new text only, `return_tensors=True` the token ids.

    As in HF, generation parameters are given when the pipeline is built (`pipeline(..., num_beams=2)`), or per call
    as `max_new_tokens=` and `generate_kwargs={...}`; other call keyword arguments go to the processor (which
    ignores, with a warning, those it does not know). max_new_tokens defaults to 256."""

    task = "image-text-to-text"
    generation_defaults = {"max_new_tokens": 256}

    def __init__(self, model, processor=None, **kwargs):
        if processor is None:
            raise ValueError("the image-text-to-text pipeline needs the model's processor (`processor=`)")
        from transformers import GenerationConfig

        generation_keys = {k for k in vars(GenerationConfig()) if not k.startswith("_")} | {"generation_config"}
        self._init_generate_kwargs = {k: kwargs.pop(k) for k in generation_keys & kwargs.keys()}
        super().__init__(model, tokenizer=processor.tokenizer, processor=processor, **kwargs)

    def __call__(self, images=None, text=None, **kwargs):
        if images is None and text is None:
            raise ValueError("You must at least provide either text or images.")
        if _is_chat(text) or (text is None and _is_chat(images)):
            if _is_chat(text) and images is not None:
                raise ValueError("Invalid input: you passed `chat` and `images` as separate input arguments. Images "
                                 "must be placed inside the chat message's `content`.")
            chats = text if text is not None else images
            if isinstance(chats[0], dict):
                return self._call_items([_Chat(chats)], kwargs)[0]
            return self._call_items([_Chat(c) for c in chats], kwargs)
        if images is not None and text is None:
            items = images if isinstance(images, (list, tuple)) else [images]
            if not all(isinstance(i, dict) for i in items):
                raise ValueError("You must provide text for this pipeline.")
            results = self._call_items([dict(i) for i in items], kwargs)
            return results if isinstance(images, (list, tuple)) else results[0]
        if images is None:
            if isinstance(text, (list, tuple)):
                return self._call_items([{"text": t} for t in text], kwargs)
            return self._call_items([{"text": text}], kwargs)[0]
        return self._call_items([{"images": images, "text": text}], kwargs)[0]

    def _call_items(self, items, kwargs):
        return super(TextGenerationPipeline, self).__call__(items, **kwargs)

    def _sanitize_parameters(self, max_new_tokens=None, generate_kwargs=None, return_full_text=None,
                             return_tensors=None, return_type=None, clean_up_tokenization_spaces=None,
                             continue_final_message=None, skip_special_tokens=None, timeout=None,
                             processor_kwargs=None, **processing_kwargs):
        if return_full_text is not None and return_type is None:
            if return_tensors:
                raise ValueError("`return_full_text` is mutually exclusive with `return_tensors`")
            return_type = _FULL_TEXT if return_full_text else _NEW_TEXT
        if return_tensors and return_type is None:
            return_type = _TENSORS
        generate_kwargs = dict(generate_kwargs or {})
        if max_new_tokens is not None:
            if "max_new_tokens" in generate_kwargs:
                raise ValueError("'max_new_tokens' is defined twice, once in 'generate_kwargs' and once as a direct "
                                 "parameter, please use only one")
            generate_kwargs["max_new_tokens"] = max_new_tokens
        # a call's generation_config replaces the parameters given at construction
        self._generate_kwargs = generate_kwargs if "generation_config" in generate_kwargs else \
            {**self._init_generate_kwargs, **generate_kwargs}
        pre = {"continue_final_message": continue_final_message, "processor_kwargs": processor_kwargs,
               "processing_kwargs": processing_kwargs}
        post = {"return_type": return_type or _FULL_TEXT, "continue_final_message": continue_final_message,
                "skip_special_tokens": skip_special_tokens,
                "clean_up_tokenization_spaces": clean_up_tokenization_spaces}
        return pre, post

    def preprocess(self, item, continue_final_message=None, processor_kwargs=None, processing_kwargs=None):
        processing_kwargs = dict(processing_kwargs or {})
        if isinstance(item, _Chat):
            if continue_final_message is None:
                continue_final_message = item.messages[-1]["role"] == "assistant"
            encoded = self.processor.apply_chat_template(
                item.messages, continue_final_message=continue_final_message, return_tensors="np", tokenize=True,
                return_dict=True, add_generation_prompt=not continue_final_message,
                processor_kwargs=dict(processor_kwargs or {}), **processing_kwargs)
            prompt = item
        else:
            from transformers.image_utils import load_images

            images = load_images(item["images"]) if item.get("images") is not None else None
            kwargs = processor_kwargs if processor_kwargs is not None else processing_kwargs
            encoded = self.processor(images=images, text=item["text"], return_tensors="np", **kwargs)
            prompt = item["text"]
        inputs = {k: np.asarray(encoded[k]) for k in _MODEL_INPUTS if k in encoded and encoded[k] is not None}
        return dict(inputs, prompt=prompt)

    def _generate(self, p):
        kwargs = self.generate_kwargs(**self._generate_kwargs)
        model_inputs = {k: p[k] for k in _MODEL_INPUTS if k in p}
        input_ids = model_inputs.pop("input_ids")
        out = self.model.generate(input_ids, **model_inputs, **kwargs)
        sequences = out if not hasattr(out, "sequences") else out.sequences
        sequences = sequences.asnumpy() if hasattr(sequences, "asnumpy") else np.asarray(sequences)
        return dict(p, sequences=sequences)

    def postprocess(self, out, return_type=_FULL_TEXT, continue_final_message=None, skip_special_tokens=None,
                    clean_up_tokenization_spaces=None):
        prompt = out["prompt"]
        input_text = prompt.messages if isinstance(prompt, _Chat) else prompt
        sequences = out["sequences"]
        if return_type == _TENSORS:
            return [{"input_text": input_text, "generated_token_ids": s} for s in sequences]
        skip = True if skip_special_tokens is None else skip_special_tokens
        decode_kwargs = {} if clean_up_tokenization_spaces is None else \
            {"clean_up_tokenization_spaces": clean_up_tokenization_spaces}
        decoded_input = self.processor.post_process_image_text_to_text(out["input_ids"], skip_special_tokens=skip,
                                                                        **decode_kwargs)[0]
        records = []
        for generated in self.processor.post_process_image_text_to_text(sequences, skip_special_tokens=skip,
                                                                         **decode_kwargs):
            # as HF: the decoded prompt is cut off when the decoded sequence starts with it (up to 2 characters in)
            at = generated.find(decoded_input)
            if 0 <= at <= 2:
                generated = generated[at + len(decoded_input):]
            if return_type == _FULL_TEXT:
                generated = self._full_text(prompt, generated, continue_final_message)
            records.append({"input_text": input_text, "generated_text": generated})
        return records

    @staticmethod
    def _full_text(prompt, generated, continue_final_message):
        if not isinstance(prompt, _Chat):
            return prompt + generated
        messages = list(prompt.messages)
        if continue_final_message is None:
            continue_final_message = messages[-1]["role"] == "assistant"
        if not continue_final_message:
            return messages + [{"role": "assistant", "content": generated}]
        content = messages[-1]["content"]
        if isinstance(content, str):
            content = content + generated
        else:
            last = dict(content[-1])
            last["text"] += generated
            content = list(content[:-1]) + [last]
        return messages[:-1] + [{"role": messages[-1]["role"], "content": content}]


class _Chat:
    """A conversation (list of {"role", "content"} messages) given to the pipeline as one input."""

    def __init__(self, messages):
        self.messages = messages


def _is_chat(x):
    return isinstance(x, (list, tuple)) and len(x) > 0 and isinstance(x[0], (list, tuple, dict)) and \
        (not isinstance(x[0], dict) or "role" in x[0])
