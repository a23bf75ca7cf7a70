"""`mindone-transformers serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) around one causal LM.

Endpoints: `GET /v1/models`, `POST /v1/chat/completions` (chat template, tools through the template, streaming as
server-sent events), `POST /v1/completions`. Requests are queued and run one at a time on a single worker thread
(`generate()` holds the process-wide execution lock anyway, see `backend.runtime.execution_lock`), so concurrent
clients are all served correctly; the event loop stays free to accept and stream while a request generates.

Errors use OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with a 4xx status for bad requests
(missing or invalid fields, unknown model, context too long) and 500 for a failure inside generation; the server
keeps running either way.

Sampling defaults: a request without `temperature` uses the server's `--temperature` (0 = greedy by default);
`temperature=0` is greedy decoding and gives exactly `generate(do_sample=False)`'s tokens.
"""

import asyncio
import json
import logging
import re
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, List, Optional, Union

import numpy as np

logger = logging.getLogger(__name__)

_INSTALL_HINT = "pip install 'mindone-transformers[serve]' (or: pip install fastapi uvicorn)"
_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)


def _require_fastapi():
    try:
        import fastapi  # noqa: F401
        import pydantic  # noqa: F401
    except ImportError as e:
        raise ImportError(f"`mindone-transformers serve` needs FastAPI: {_INSTALL_HINT} ({e})") from None


class APIError(Exception):
    """A request error reported to the client in OpenAI's error shape."""

    def __init__(self, status, message, param=None, code=None, type_="invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_

    def body(self):
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Request:
    """One generation: prompt ids, settings and what came out."""

    def __init__(self, prompt_ids, max_tokens, temperature, top_p, stop, seed, n):
        self.prompt_ids = prompt_ids
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.stop = stop
        self.seed = seed
        self.n = n


class _StopText:
    """Incremental text of one generated row, cut before the first stop string (OpenAI leaves it out)."""

    def __init__(self, tokenizer, stop):
        self.tokenizer = tokenizer
        self.stop = stop
        self.ids = []
        self.sent = 0  # characters already handed out
        self.stopped = False
        self.finished = False

    def text(self):
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)

    def add(self, token):
        """Adds a token; returns the text that is now safe to hand out."""
        if self.stopped or self.finished:
            return ""
        self.ids.append(int(token))
        text = self.text()
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            ready = text[:cut]
        else:
            ready = text
            if ready.endswith("\ufffd"):  # a character split across tokens: wait for the rest
                ready = ready.rstrip("\ufffd")
            held = max((k for s in self.stop for k in range(1, len(s)) if ready.endswith(s[:k])), default=0)
            ready = ready[:len(ready) - held]
        delta = ready[self.sent:] if len(ready) > self.sent else ""
        self.sent = max(self.sent, len(ready))
        return delta

    def final(self):
        text = self.text()
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        return text[:cut] if cut >= 0 else text


class Engine:
    """The model, its tokenizer and the single worker thread that runs every generation."""

    def __init__(self, model, tokenizer, model_id, default_max_tokens=512, default_temperature=0.0,
                 disable_compile=False):
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.default_max_tokens = default_max_tokens
        self.default_temperature = default_temperature
        self.disable_compile = disable_compile
        self.context_length = getattr(model.config, "max_position_embeddings", None)
        self.created = int(time.time())
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mindone-serve")
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}

    # -- request preparation -----------------------------------------------------------------------------------------

    def check_model(self, name):
        if name != self.model_id:
            raise APIError(404, f"The model `{name}` does not exist; this server serves `{self.model_id}`.",
                           param="model", code="model_not_found")

    def prepare(self, prompt_ids, body):
        max_tokens = body.max_completion_tokens if getattr(body, "max_completion_tokens", None) is not None \
            else body.max_tokens
        for name, value, low in (("max_tokens", max_tokens, 1), ("n", body.n, 1)):
            if value is not None and value < low:
                raise APIError(400, f"`{name}` must be at least {low}, got {value}.", param=name)
        if body.temperature is not None and not 0 <= body.temperature <= 2:
            raise APIError(400, f"`temperature` must be in [0, 2], got {body.temperature}.", param="temperature")
        if body.top_p is not None and not 0 < body.top_p <= 1:
            raise APIError(400, f"`top_p` must be in (0, 1], got {body.top_p}.", param="top_p")
        prompt_len = len(prompt_ids)
        if prompt_len == 0:
            raise APIError(400, "The prompt is empty.", param="prompt")
        if self.context_length is not None:
            room = self.context_length - prompt_len
            wanted = max_tokens if max_tokens is not None else 1
            if room < wanted:
                raise APIError(400, f"This model's maximum context length is {self.context_length} tokens. However, "
                                    f"you requested {prompt_len + wanted} tokens ({prompt_len} in the prompt, "
                                    f"{wanted} in the completion). Please reduce the length of the prompt or "
                                    "completion.", param="messages", code="context_length_exceeded")
            if max_tokens is None:
                max_tokens = min(self.default_max_tokens, room)
        elif max_tokens is None:
            max_tokens = self.default_max_tokens
        stop = body.stop
        stop = [stop] if isinstance(stop, str) else [s for s in (stop or []) if s]
        temperature = self.default_temperature if body.temperature is None else body.temperature
        return _Request(prompt_ids, max_tokens, temperature, body.top_p, stop, body.seed, body.n or 1)

    # -- generation (worker thread) ----------------------------------------------------------------------------------

    def _generate(self, req, on_tokens=None):
        """Runs generate(); returns per-row lists of new token ids (up to and including an EOS)."""
        import mindspore as ms

        kwargs = dict(max_new_tokens=req.max_tokens)
        if req.temperature > 0:
            kwargs.update(do_sample=True, temperature=req.temperature, top_p=req.top_p or 1.0, top_k=0,
                          num_return_sequences=req.n)
        else:
            kwargs.update(do_sample=False)
        if self.disable_compile:
            kwargs["disable_compile"] = True
        if req.stop:
            kwargs.update(stop_strings=req.stop, tokenizer=self.tokenizer)
        if self.tokenizer.pad_token_id is None and self.eos_ids:
            kwargs["pad_token_id"] = min(self.eos_ids)
        elif self.tokenizer.pad_token_id is not None:
            kwargs["pad_token_id"] = self.tokenizer.pad_token_id
        streamer = _CallbackStreamer(on_tokens) if on_tokens is not None else None
        if req.seed is not None:
            ms.set_seed(req.seed)
        ids = np.asarray([req.prompt_ids], np.int64)
        out = self.model.generate(ids, streamer=streamer, **kwargs).asnumpy()[:, ids.shape[1]:]
        rows = []
        for row in out:
            tokens = []
            for t in row.tolist():
                tokens.append(t)
                if t in self.eos_ids:
                    break
            rows.append(tokens)
        if req.temperature <= 0 and req.n > 1:  # greedy: n identical choices
            rows = rows * req.n
        return rows

    def finish_reason(self, tokens, text_obj, req):
        if text_obj.stopped or (tokens and tokens[-1] in self.eos_ids):
            return "stop"
        return "length" if len(tokens) >= req.max_tokens else "stop"

    async def run(self, req):
        return await asyncio.wrap_future(self.executor.submit(self._generate, req))

    def stream(self, req):
        """An async iterator of ("tokens", (B,) array) events then ("done", rows) or ("error", exception)."""
        loop = asyncio.get_running_loop()
        queue = asyncio.Queue()

        def on_tokens(tokens):
            loop.call_soon_threadsafe(queue.put_nowait, ("tokens", np.asarray(tokens).reshape(-1)))

        def work():
            try:
                rows = self._generate(req, on_tokens)
                loop.call_soon_threadsafe(queue.put_nowait, ("done", rows))
            except Exception as e:  # noqa: BLE001 - reported to the client in the stream
                logger.exception("generation failed")
                loop.call_soon_threadsafe(queue.put_nowait, ("error", e))

        self.executor.submit(work)

        async def events():
            while True:
                event = await queue.get()
                yield event
                if event[0] != "tokens":
                    return

        return events()

    def close(self):
        self.executor.shutdown(wait=True, cancel_futures=True)


class _CallbackStreamer:
    """A generate() streamer that skips the prompt and hands each step's new tokens to a callback."""

    def __init__(self, callback):
        self.callback = callback
        self.prompt_seen = False

    def put(self, value):
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.callback(value)

    def end(self):
        pass


def _message_text(content):
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "text":
            parts.append(part.get("text", ""))
        elif isinstance(part, dict):
            raise APIError(400, f"content part type {part.get('type')!r} is not supported (text only).",
                           param="messages")
    return "".join(parts)


def _parse_tool_calls(text):
    """Tool calls written as `<tool_call>{"name": ..., "arguments": ...}</tool_call>` (the Hermes/Qwen/SmolLM
    template convention); returns (content before the calls, [OpenAI tool_call dicts])."""
    calls = []
    for match in _TOOL_CALL.finditer(text):
        try:
            data = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        if not isinstance(data, dict) or "name" not in data:
            continue
        arguments = data.get("arguments", data.get("parameters", {}))
        calls.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                      "function": {"name": data["name"], "arguments": arguments if isinstance(arguments, str)
                                   else json.dumps(arguments)}})
    if not calls:
        return text, []
    return text[:text.find("<tool_call>")].strip(), calls


def build_app(model, tokenizer, model_id, default_max_tokens=512, default_temperature=0.0, disable_compile=False):
    """The FastAPI application serving `model` under the name `model_id`."""
    _require_fastapi()
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from pydantic import BaseModel, ConfigDict

    engine = Engine(model, tokenizer, model_id, default_max_tokens, default_temperature, disable_compile)

    class Common(BaseModel):
        model_config = ConfigDict(extra="allow")
        model: str
        max_tokens: Optional[int] = None
        temperature: Optional[float] = None
        top_p: Optional[float] = None
        stop: Optional[Union[str, List[str]]] = None
        seed: Optional[int] = None
        n: Optional[int] = 1
        stream: Optional[bool] = False
        stream_options: Optional[dict] = None

    class ChatBody(Common):
        messages: List[dict]
        max_completion_tokens: Optional[int] = None
        tools: Optional[List[dict]] = None
        tool_choice: Optional[Any] = None

    class CompletionBody(Common):
        prompt: Union[str, List[int]]
        echo: Optional[bool] = False

    @asynccontextmanager
    async def lifespan(app):
        yield
        engine.close()

    app = FastAPI(title="mindone-transformers", lifespan=lifespan)
    app.state.engine = engine

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        message = f"{where}: {first.get('msg', 'invalid request')}" if where else first.get("msg", "invalid request")
        return JSONResponse(APIError(400, message, param=where).body(), status_code=400)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        logger.exception("request failed")
        return JSONResponse(APIError(500, f"{type(exc).__name__}: {exc}", type_="server_error").body(),
                            status_code=500)

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [{"id": engine.model_id, "object": "model", "created": engine.created,
                                            "owned_by": "mindone-transformers"}]}

    def usage(prompt_len, rows):
        completion = sum(len(r) for r in rows)
        return {"prompt_tokens": prompt_len, "completion_tokens": completion,
                "total_tokens": prompt_len + completion}

    def sse(obj):
        return f"data: {json.dumps(obj)}\n\n"

    def streaming(req, make_chunk, first_chunks, include_usage):
        if req.n > 1 and req.temperature <= 0:
            raise APIError(400, "`n` > 1 with `stream` needs sampling (`temperature` > 0): greedy choices are "
                                "identical.", param="n")
        async def body():
            texts = [_StopText(tokenizer, req.stop) for _ in range(req.n)]
            for chunk in first_chunks:
                yield sse(chunk)
            async for kind, value in engine.stream(req):
                if kind == "tokens":
                    for i, token in enumerate(value[:req.n]):
                        if texts[i].finished:
                            continue
                        if int(token) in engine.eos_ids:
                            texts[i].finished = True
                            texts[i].ids.append(int(token))
                            continue
                        delta = texts[i].add(token)
                        if delta:
                            yield sse(make_chunk(i, delta, None))
                elif kind == "done":
                    rows = value
                    for i, row in enumerate(rows):
                        rest = texts[i].final()[texts[i].sent:]  # text held back for a possible stop string
                        if rest:
                            yield sse(make_chunk(i, rest, None))
                        yield sse(make_chunk(i, None, engine.finish_reason(row, texts[i], req)))
                    if include_usage:
                        yield sse({**make_chunk(0, None, None), "choices": [],
                                   "usage": usage(len(req.prompt_ids), rows)})
                else:
                    yield sse(APIError(500, f"{type(value).__name__}: {value}", type_="server_error").body())
                    return
            yield "data: [DONE]\n\n"

        return StreamingResponse(body(), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatBody):
        engine.check_model(body.model)
        if not body.messages:
            raise APIError(400, "`messages` must hold at least one message.", param="messages")
        messages = []
        for m in body.messages:
            if "role" not in m:
                raise APIError(400, "each message needs a `role`.", param="messages")
            message = dict(m)
            message["content"] = _message_text(m.get("content"))
            messages.append(message)
        tools = body.tools if body.tools and body.tool_choice != "none" else None
        if not getattr(tokenizer, "chat_template", None):
            raise APIError(400, f"`{engine.model_id}` has no chat template; use /v1/completions.", param="messages")
        try:
            ids = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=True,
                                                return_dict=False)
        except Exception as e:  # noqa: BLE001 - a template error is the request's fault
            raise APIError(400, f"the chat template failed on these messages: {e}", param="messages") from None
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        req = engine.prepare(list(ids), body)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            def chunk(i, text, finish):
                delta = {"content": text} if text is not None else {}
                return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": engine.model_id,
                        "choices": [{"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}]}

            first = [{**chunk(i, None, None), "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                                           "logprobs": None, "finish_reason": None}]}
                     for i in range(req.n)]
            include = bool((body.stream_options or {}).get("include_usage"))
            return streaming(req, chunk, first, include)
        rows = await engine.run(req)
        choices = []
        for i, row in enumerate(rows):
            text_obj = _StopText(tokenizer, req.stop)
            text_obj.ids = [t for t in row if t not in engine.eos_ids]
            text = text_obj.final()
            text_obj.stopped = len(text) < len(text_obj.text())
            finish = engine.finish_reason(row, text_obj, req)
            message = {"role": "assistant", "content": text}
            if tools:
                content, calls = _parse_tool_calls(text)
                if calls:
                    message = {"role": "assistant", "content": content or None, "tool_calls": calls}
                    finish = "tool_calls"
            choices.append({"index": i, "message": message, "logprobs": None, "finish_reason": finish})
        return {"id": rid, "object": "chat.completion", "created": created, "model": engine.model_id,
                "choices": choices, "usage": usage(len(req.prompt_ids), rows)}

    @app.post("/v1/completions")
    async def completions(body: CompletionBody):
        engine.check_model(body.model)
        if isinstance(body.prompt, str):
            ids = tokenizer(body.prompt)["input_ids"]
            prompt_text = body.prompt
        else:
            ids = list(body.prompt)
            prompt_text = tokenizer.decode(ids)
        req = engine.prepare(list(ids), body)
        echo = prompt_text if body.echo else ""
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            def chunk(i, text, finish):
                return {"id": rid, "object": "text_completion", "created": created, "model": engine.model_id,
                        "choices": [{"index": i, "text": text or "", "logprobs": None, "finish_reason": finish}]}

            first = [chunk(i, echo, None) for i in range(req.n)] if echo else []
            include = bool((body.stream_options or {}).get("include_usage"))
            return streaming(req, chunk, first, include)
        rows = await engine.run(req)
        choices = []
        for i, row in enumerate(rows):
            text_obj = _StopText(tokenizer, req.stop)
            text_obj.ids = [t for t in row if t not in engine.eos_ids]
            text = text_obj.final()
            text_obj.stopped = len(text) < len(text_obj.text())
            choices.append({"index": i, "text": echo + text, "logprobs": None,
                            "finish_reason": engine.finish_reason(row, text_obj, req)})
        return {"id": rid, "object": "text_completion", "created": created, "model": engine.model_id,
                "choices": choices, "usage": usage(len(req.prompt_ids), rows)}

    return app


def serve(model, tokenizer, model_id, host="127.0.0.1", port=8000, **app_kwargs):
    """Runs the server until Ctrl-C (uvicorn handles the signal and shuts down cleanly)."""
    try:
        import uvicorn
    except ImportError as e:
        raise ImportError(f"`mindone-transformers serve` needs uvicorn: {_INSTALL_HINT} ({e})") from None
    app = build_app(model, tokenizer, model_id, **app_kwargs)
    # uvicorn shuts down on Ctrl-C / SIGTERM and then re-raises the signal to the handler it found. Once MindSpore has
    # run a graph, its runtime turns SIGINT into SIGTERM, whose default action would kill the process after the clean
    # shutdown (exit status 143); Python-level handlers make the re-raised signal a KeyboardInterrupt instead.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info")
    except KeyboardInterrupt:
        logger.info("server stopped")


__all__ = ["APIError", "Engine", "build_app", "serve"]
