"""`TransformersModel`: smolagents' `TransformersModel` with the model and generation on MindSpore.

Same constructor arguments where they apply (`model_id`, `max_new_tokens` / `max_tokens`, `model_kwargs`,
`apply_chat_template_kwargs`, generation kwargs forwarded to `generate()`), the same prompt (the tokenizer's chat
template, with the tools' JSON schemas), the same stop-sequence rule and the same `ChatMessage` (text and
`TokenUsage`) as smolagents' torch class gives on the same checkpoint.
"""

import argparse
import logging
from threading import Thread

import numpy as np

try:
    from smolagents.models import ChatMessage, ChatMessageStreamDelta, MessageRole
    from smolagents.models import TransformersModel as _SmolagentsTransformersModel
    from smolagents.models import remove_content_after_stop_sequences
    from smolagents.monitoring import TokenUsage
except ImportError as e:
    raise ImportError("mindone.transformers.agents.TransformersModel needs smolagents: `pip install smolagents` "
                      f"(or `pip install 'mindone-transformers[agents]'`) ({e})") from None

from ..generation import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

logger = logging.getLogger(__name__)


class StopOnStrings(StoppingCriteria):
    """smolagents' stop rule: the text of the generated tokens, each decoded on its own (row 0), ends with a stop
    sequence."""

    def __init__(self, stop_strings, tokenizer):
        self.stop_strings = list(stop_strings)
        self.tokenizer = tokenizer
        self.stream = ""

    def reset(self):
        self.stream = ""

    def __call__(self, input_ids, scores, **kwargs):
        last = int(np.asarray(input_ids.asnumpy() if hasattr(input_ids, "asnumpy") else input_ids)[0, -1])
        self.stream += self.tokenizer.decode(last, skip_special_tokens=True)
        return any(self.stream.endswith(s) for s in self.stop_strings)


class TransformersModel(_SmolagentsTransformersModel):
    """A smolagents `Model` that runs a `mindone.transformers` causal LM.

    Args:
        model_id: a local directory, hub repo id or `.gguf` file; None: the embedded SmolLM2-135M-Instruct (the
            default of `mindone-transformers generate`).
        device_map: ignored (MindSpore's device is process-wide: `mindspore.set_device`).
        torch_dtype / dtype: the weights' dtype (`"float32"` by default).
        trust_remote_code: not supported (our classes are the code).
        model_kwargs: extra `from_pretrained` arguments (`gguf_file=`, `revision=`, ...).
        max_new_tokens / max_tokens: completion length (`max_tokens` wins when given).
        apply_chat_template_kwargs: extra `apply_chat_template` arguments.
        kwargs: forwarded to `generate()` on every call (e.g. `do_sample=True, temperature=0.7`), as smolagents does.
    """

    def __init__(self, model_id=None, device_map=None, torch_dtype=None, trust_remote_code=False, model_kwargs=None,
                 max_new_tokens=4096, max_tokens=None, apply_chat_template_kwargs=None, dtype=None, **kwargs):
        from ..cli import load

        if trust_remote_code:
            raise ValueError("trust_remote_code=True is not supported: mindone.transformers runs its own model "
                             "classes")
        if device_map not in (None, "cpu", "auto"):
            logger.info("device_map=%r ignored: MindSpore's device is set with mindspore.set_device", device_map)
        max_new_tokens = max_tokens if max_tokens is not None else max_new_tokens
        self._is_vlm = False
        self.model_kwargs = dict(model_kwargs or {})
        self.apply_chat_template_kwargs = apply_chat_template_kwargs or {}
        gguf_file = self.model_kwargs.pop("gguf_file", None)
        if self.model_kwargs:
            raise ValueError(f"model_kwargs {sorted(self.model_kwargs)} are not supported; supported: gguf_file")
        args = argparse.Namespace(model=model_id, gguf_file=gguf_file, dtype=str(dtype or torch_dtype or "float32"),
                                  device=None, threads=None, adapter=None)
        self.model, self.tokenizer = load(args)
        if model_id is None:
            model_id = "SmolLM2-135M-Instruct"
        self.streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        # smolagents' Model.__init__ (TransformersModel's own loads torch weights)
        super(_SmolagentsTransformersModel, self).__init__(flatten_messages_as_text=True, model_id=model_id,
                                                            max_new_tokens=max_new_tokens, **kwargs)

    def make_stopping_criteria(self, stop_sequences, tokenizer):
        return StoppingCriteriaList([StopOnStrings(stop_sequences, tokenizer)])

    def _prepare_completion_args(self, messages, stop_sequences=None, tools_to_call_from=None, **kwargs):
        completion_kwargs = self._prepare_completion_kwargs(messages=messages, stop_sequences=stop_sequences,
                                                            tools_to_call_from=tools_to_call_from, tool_choice=None,
                                                            **kwargs)
        messages = completion_kwargs.pop("messages")
        stop_sequences = completion_kwargs.pop("stop", None)
        tools = completion_kwargs.pop("tools", None)
        completion_kwargs.pop("response_format", None)
        max_new_tokens = (kwargs.get("max_new_tokens") or kwargs.get("max_tokens") or self.kwargs.get("max_new_tokens")
                          or self.kwargs.get("max_tokens") or 1024)
        encoded = self.tokenizer.apply_chat_template(messages, tools=tools, return_tensors="np",
                                                     add_generation_prompt=True, tokenize=True, return_dict=True,
                                                     **self.apply_chat_template_kwargs)
        input_ids = np.asarray(encoded["input_ids"] if hasattr(encoded, "keys") else encoded, np.int64)
        stopping_criteria = self.make_stopping_criteria(stop_sequences, self.tokenizer) if stop_sequences else None
        completion_kwargs["max_new_tokens"] = max_new_tokens
        return dict(inputs=input_ids, use_cache=True, stopping_criteria=stopping_criteria, **completion_kwargs)

    def generate(self, messages, stop_sequences=None, response_format=None, tools_to_call_from=None, **kwargs):
        """One completion of `messages` as a smolagents `ChatMessage` (text cut before any stop sequence, token
        usage = prompt tokens and generated tokens)."""
        if response_format is not None:
            raise ValueError("Transformers does not support structured outputs, use VLLMModel for this.")
        generation_kwargs = self._prepare_completion_args(messages=messages, stop_sequences=stop_sequences,
                                                          tools_to_call_from=tools_to_call_from, **kwargs)
        prompt_len = generation_kwargs["inputs"].shape[1]
        out = self.model.generate(**generation_kwargs).asnumpy()
        generated = out[0, prompt_len:]
        text = self.tokenizer.decode(generated, skip_special_tokens=True)
        if stop_sequences is not None:
            text = remove_content_after_stop_sequences(text, stop_sequences)
        return ChatMessage(role=MessageRole.ASSISTANT, content=text,
                           raw={"out": text, "completion_kwargs": {k: v for k, v in generation_kwargs.items()
                                                                   if k != "inputs"}},
                           token_usage=TokenUsage(input_tokens=prompt_len, output_tokens=len(generated)))

    def generate_stream(self, messages, stop_sequences=None, response_format=None, tools_to_call_from=None,
                        **kwargs):
        """`generate` as smolagents `ChatMessageStreamDelta`s, one per streamed text piece."""
        if response_format is not None:
            raise ValueError("Transformers does not support structured outputs, use VLLMModel for this.")
        generation_kwargs = self._prepare_completion_args(messages=messages, stop_sequences=stop_sequences,
                                                          tools_to_call_from=tools_to_call_from, **kwargs)
        prompt_len = generation_kwargs["inputs"].shape[1]
        thread = Thread(target=self.model.generate, kwargs={"streamer": self.streamer, **generation_kwargs})
        thread.start()
        count = 0
        for text in self.streamer:
            count += 1
            yield ChatMessageStreamDelta(content=text, tool_calls=None,
                                         token_usage=TokenUsage(input_tokens=prompt_len if count == 1 else 0,
                                                                output_tokens=1))
        thread.join()
        self._last_output_token_count = count


__all__ = ["TransformersModel"]
