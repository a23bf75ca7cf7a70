"""Streamers with HF's behaviour: `generate` calls `put(token_ids)` with the prompt, then with each new token, and
`end()` once. Text is released word by word (up to the last space), at newlines, after CJK characters, and at once
while it holds only letters, digits and spaces (transformers 5.25)."""

import asyncio
import sys
import unicodedata
from queue import Queue

import numpy as np

from .logits_process import _as_numpy


class BaseStreamer:
    def put(self, value):
        raise NotImplementedError()

    def end(self):
        raise NotImplementedError()


def _is_cjk(cp):
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)


class TextStreamer(BaseStreamer):
    """Writes decoded text to stdout as soon as whole words are available.

    Args:
        tokenizer: the tokenizer used to decode.
        skip_prompt: do not print the prompt (the first `put`).
        decode_kwargs: passed to `tokenizer.decode` (e.g. `skip_special_tokens=True`).
    """

    def __init__(self, tokenizer, skip_prompt=False, **decode_kwargs):
        self.tokenizer = tokenizer
        self.skip_prompt = skip_prompt
        self.decode_kwargs = decode_kwargs
        self.token_cache = []
        self.print_len = 0
        self.next_tokens_are_prompt = True

    def put(self, value):
        value = np.asarray(_as_numpy(value))
        if value.ndim > 1 and value.shape[0] > 1:
            raise ValueError("TextStreamer only supports batch size 1")
        if value.ndim > 1:
            value = value[0]
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        self.token_cache.extend(value.reshape(-1).tolist())
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        if text.endswith("\n"):
            printable = text[self.print_len:]
            # keep the newline token as context: decoding the next token alone could drop its leading space
            self.token_cache = self.token_cache[-1:]
            self.print_len = len(self.tokenizer.decode(self.token_cache, **self.decode_kwargs))
        elif text and _is_cjk(ord(text[-1])):
            printable = text[self.print_len:]
            self.print_len += len(printable)
        elif all(ch.isspace() or unicodedata.category(ch)[0] in "LMN" for ch in text[self.print_len:]):
            # only letters, digits and spaces so far: nothing a later token can still change (transformers >= 5.25)
            printable = text[self.print_len:]
            self.print_len += len(printable)
        else:
            # hold back the last, possibly incomplete, word
            printable = text[self.print_len:text.rfind(" ") + 1]
            self.print_len += len(printable)
        self.on_finalized_text(printable)

    def end(self):
        if self.token_cache:
            text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
            printable = text[self.print_len:]
            self.token_cache = []
            self.print_len = 0
        else:
            printable = ""
        self.next_tokens_are_prompt = True
        self.on_finalized_text(printable, stream_end=True)

    def on_finalized_text(self, text, stream_end=False):
        """Where finished text goes; subclasses override. The end of the stream adds a newline."""
        sys.stdout.write(text + ("\n" if stream_end else ""))
        sys.stdout.flush()


class TextIteratorStreamer(TextStreamer):
    """Puts finished text in a thread-safe queue: run `generate` in a thread and iterate over the streamer.

    Args:
        timeout: seconds to wait for the next piece of text before `queue.Empty` is raised (None: forever).
    """

    def __init__(self, tokenizer, skip_prompt=False, timeout=None, **decode_kwargs):
        super().__init__(tokenizer, skip_prompt, **decode_kwargs)
        self.text_queue = Queue()
        self.stop_signal = None
        self.timeout = timeout

    def on_finalized_text(self, text, stream_end=False):
        self.text_queue.put(text, timeout=self.timeout)
        if stream_end:
            self.text_queue.put(self.stop_signal, timeout=self.timeout)

    def __iter__(self):
        return self

    def __next__(self):
        value = self.text_queue.get(timeout=self.timeout)
        if value == self.stop_signal:
            raise StopIteration()
        return value


class AsyncTextIteratorStreamer(TextStreamer):
    """Puts finished text in an asyncio queue: create it inside a coroutine, run `generate` in a thread and
    `async for` over the streamer.

    Args:
        timeout: seconds to wait for the next piece of text before `TimeoutError` is raised (None: forever).
    """

    def __init__(self, tokenizer, skip_prompt=False, timeout=None, **decode_kwargs):
        super().__init__(tokenizer, skip_prompt, **decode_kwargs)
        self.text_queue = asyncio.Queue()
        self.stop_signal = None
        self.timeout = timeout
        self.loop = asyncio.get_running_loop()

    def on_finalized_text(self, text, stream_end=False):
        self.loop.call_soon_threadsafe(self.text_queue.put_nowait, text)
        if stream_end:
            self.loop.call_soon_threadsafe(self.text_queue.put_nowait, self.stop_signal)

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            value = await asyncio.wait_for(self.text_queue.get(), self.timeout)
        except asyncio.TimeoutError as error:  # the builtin TimeoutError from Python 3.11 on; HF raises that one
            raise TimeoutError() from error
        if value == self.stop_signal:
            raise StopAsyncIteration()
        return value
