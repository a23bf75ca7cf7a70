"""`mindone-transformers serve` in-process (uvicorn on a free loopback port, in a thread) on a tiny random Llama,
driven by the official `openai` client: greedy output equals generate()'s, exact usage, stop strings, streaming,
concurrent clients, OpenAI-shaped 4xx errors."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import openai
import pytest
import uvicorn

from mindone.transformers import LlamaForCausalLM
from mindone.transformers.serve import build_app
from tests.generation.helpers import tiny_llama_pair, tiny_tokenizer

MODEL_ID = "tiny-llama"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("tiny-llama"))
    tiny_llama_pair(directory, seed=2)
    tiny_tokenizer().save_pretrained(directory)
    return directory


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny_dir):
    tokenizer = tiny_tokenizer()
    model = LlamaForCausalLM.from_pretrained(tiny_dir)
    app = build_app(model, tokenizer, MODEL_ID, default_max_tokens=16)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}/v1"
    yield dict(client=openai.OpenAI(base_url=base, api_key="unused", max_retries=0), base=base, model=model,
               tokenizer=tokenizer)
    server.should_exit = True
    thread.join(timeout=30)


def reference(served, prompt_ids, max_new_tokens):
    """generate()'s greedy new tokens (up to and including EOS) and text."""
    tok = served["tokenizer"]
    out = served["model"].generate(np.asarray([prompt_ids]), max_new_tokens=max_new_tokens, do_sample=False,
                                   pad_token_id=tok.pad_token_id).asnumpy()[0, len(prompt_ids):].tolist()
    if tok.eos_token_id in out:
        out = out[:out.index(tok.eos_token_id) + 1]
    return out, tok.decode(out, skip_special_tokens=True)


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "The capital of France"}]


def chat_ids(served, messages=MESSAGES):
    return list(served["tokenizer"].apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                        return_dict=False))


def test_models_lists_the_served_model(served):
    assert [m.id for m in served["client"].models.list().data] == [MODEL_ID]


def test_greedy_chat_completion_equals_generate_with_exact_usage(served):
    r = served["client"].chat.completions.create(model=MODEL_ID, messages=MESSAGES, temperature=0, max_tokens=12)
    ids = chat_ids(served)
    tokens, text = reference(served, ids, 12)
    assert r.choices[0].message.content == text and r.choices[0].message.role == "assistant"
    assert r.usage.prompt_tokens == len(ids) and r.usage.completion_tokens == len(tokens)
    assert r.usage.total_tokens == len(ids) + len(tokens)
    assert r.choices[0].finish_reason == ("stop" if tokens[-1] == served["tokenizer"].eos_token_id else "length")
    # max_completion_tokens is the newer name of max_tokens
    r2 = served["client"].chat.completions.create(model=MODEL_ID, messages=MESSAGES, temperature=0,
                                                  max_completion_tokens=12)
    assert r2.choices[0].message.content == text


def test_streamed_chat_equals_the_whole_response(served):
    stream = served["client"].chat.completions.create(model=MODEL_ID, messages=MESSAGES, temperature=0,
                                                      max_tokens=12, stream=True,
                                                      stream_options={"include_usage": True})
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    tokens, text = reference(served, chat_ids(served), 12)
    assert "".join(pieces) == text and len([p for p in pieces if p]) > 1
    assert usage.completion_tokens == len(tokens) and finish in ("stop", "length")


def test_completion_with_a_stop_string_cuts_before_it(served):
    tok = served["tokenizer"]
    prompt = "Once upon a time"
    ids = tok(prompt)["input_ids"]
    _, text = reference(served, ids, 16)
    assert len(text) > 4
    stop = text[2:4]
    r = served["client"].completions.create(model=MODEL_ID, prompt=prompt, temperature=0, max_tokens=16, stop=[stop])
    assert r.choices[0].text == text[:text.find(stop)] and r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens == len(ids) and 1 <= r.usage.completion_tokens <= 16
    streamed = "".join(c.choices[0].text for c in served["client"].completions.create(
        model=MODEL_ID, prompt=prompt, temperature=0, max_tokens=16, stop=[stop], stream=True) if c.choices)
    assert streamed == text[:text.find(stop)]


def test_sampling_with_a_seed_is_reproducible_and_n_gives_n_choices(served):
    kwargs = dict(model=MODEL_ID, messages=MESSAGES, temperature=1.0, top_p=0.9, max_tokens=8, seed=7, n=2)
    a = served["client"].chat.completions.create(**kwargs)
    b = served["client"].chat.completions.create(**kwargs)
    assert len(a.choices) == 2 and [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert a.usage.completion_tokens == b.usage.completion_tokens


def test_four_concurrent_clients_get_their_greedy_answers(served):
    prompts = [[{"role": "user", "content": f"Tell me about {w}"}] for w in ("Paris", "Berlin", "models", "1 2 3")]
    results, errors = [None] * 4, []

    def ask(i):
        try:
            client = openai.OpenAI(base_url=served["base"], api_key="unused", max_retries=0)
            results[i] = client.chat.completions.create(model=MODEL_ID, messages=prompts[i], temperature=0,
                                                        max_tokens=10).choices[0].message.content
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert results == [reference(served, chat_ids(served, p), 10)[1] for p in prompts]


def test_tools_go_through_the_chat_template(served):
    tok = served["tokenizer"]
    tok.chat_template = ("{% if tools %}<s>tools: {{ tools | length }}\n{% endif %}"
                         + tok.chat_template)
    try:
        tools = [{"type": "function", "function": {"name": "get_weather", "description": "weather",
                                                   "parameters": {"type": "object", "properties": {}}}}]
        r = served["client"].chat.completions.create(model=MODEL_ID, messages=MESSAGES, temperature=0,
                                                     max_tokens=4, tools=tools)
        ids = list(tok.apply_chat_template(MESSAGES, tools=tools, add_generation_prompt=True, tokenize=True,
                                           return_dict=False))
        assert r.usage.prompt_tokens == len(ids) > len(chat_ids(served))
    finally:
        tok.chat_template = tiny_tokenizer().chat_template


@pytest.mark.parametrize("path, body, status, code", [
    ("/chat/completions", {"model": MODEL_ID}, 400, None),                                     # no messages
    ("/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, 400, None),       # no model
    ("/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, 404,
     "model_not_found"),
    ("/chat/completions", {"model": MODEL_ID, "messages": [{"role": "user", "content": "word " * 200}]}, 400,
     "context_length_exceeded"),
    ("/completions", {"model": MODEL_ID, "prompt": "hi", "max_tokens": 500}, 400, "context_length_exceeded"),
    ("/completions", {"model": MODEL_ID, "prompt": "hi", "temperature": 5}, 400, None),
])
def test_bad_requests_get_openai_shaped_errors_and_the_server_keeps_running(served, path, body, status, code):
    request = urllib.request.Request(served["base"] + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=60)
    assert info.value.code == status
    error = json.loads(info.value.read())["error"]
    assert error["message"] and error["type"] == "invalid_request_error" and error["code"] == code
    assert [m.id for m in served["client"].models.list().data] == [MODEL_ID]


def test_the_openai_client_raises_its_own_error_types(served):
    with pytest.raises(openai.NotFoundError):
        served["client"].chat.completions.create(model="nope", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError):
        served["client"].completions.create(model=MODEL_ID, prompt="x " * 300)


def test_the_cli_serves_and_ctrl_c_stops_it_cleanly(tiny_dir):
    port = free_port()
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.path.join(repo, "src"))
    proc = subprocess.Popen([sys.executable, "-m", "mindone.transformers", "serve", "--model", tiny_dir,
                             "--port", str(port), "--max-new-tokens", "6"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        deadline = time.time() + 120
        while True:
            try:
                assert [m.id for m in client.models.list().data] == [tiny_dir]
                break
            except openai.APIConnectionError:
                assert time.time() < deadline and proc.poll() is None, proc.stderr.read()[-3000:]
                time.sleep(0.3)
        r = client.chat.completions.create(model=tiny_dir, messages=MESSAGES)
        assert r.usage.completion_tokens <= 6
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_tool_call_markup_becomes_openai_tool_calls():
    from mindone.transformers.serve import _parse_tool_calls

    content, calls = _parse_tool_calls('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": '
                                       '{"city": "Paris"}}\n</tool_call>')
    assert content == "Let me check." and len(calls) == 1
    assert calls[0]["type"] == "function" and calls[0]["function"]["name"] == "get_weather"
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    assert _parse_tool_calls("no call <tool_call>not json</tool_call>") == (
        "no call <tool_call>not json</tool_call>", [])


def test_streamed_text_holds_back_a_possible_stop_string_prefix():
    from mindone.transformers.serve import _StopText

    tok = tiny_tokenizer()
    ids = tok("The capital of France is Paris. The")["input_ids"]
    text = _StopText(tok, ["Paris. T"])
    pieces = [text.add(i) for i in ids]
    assert "".join(pieces) == "The capital of France is " and text.stopped
    assert text.final() == "The capital of France is "
