"""mindone.transformers.agents.TransformersModel against smolagents' own (torch) TransformersModel on the same tiny
random Llama checkpoint, greedy: same ChatMessage text and token usage, with stop sequences and tools."""

import os
import subprocess
import sys

import pytest
from smolagents import ChatMessage, CodeAgent, Tool, ToolCallingAgent
from smolagents import TransformersModel as TorchTransformersModel

from mindone.transformers.agents import TransformersModel
from tests.generation.helpers import tiny_llama_pair, tiny_tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Weather(Tool):
    name = "get_weather"
    description = "The weather in a city."
    inputs = {"city": {"type": "string", "description": "the city"}}
    output_type = "string"

    def forward(self, city):
        return "sunny"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("tiny-llama"))
    tiny_llama_pair(directory, seed=2)
    tokenizer = tiny_tokenizer()
    # a template that renders the tools, so they change the prompt (as real tool-calling templates do)
    tokenizer.chat_template = ("{% if tools %}<s>tools: {% for t in tools %}{{ t['function']['name'] }} "
                               "{% endfor %}\n{% endif %}" + tokenizer.chat_template)
    tokenizer.save_pretrained(directory)
    kwargs = dict(model_id=directory, max_new_tokens=14, do_sample=False)
    return TransformersModel(**kwargs), TorchTransformersModel(device_map="cpu", **kwargs)


MESSAGES = [{"role": "system", "content": [{"type": "text", "text": "You are helpful."}]},
            {"role": "user", "content": [{"type": "text", "text": "The capital of France"}]}]


def assert_same(ours, theirs):
    assert isinstance(ours, ChatMessage)
    assert ours.role == theirs.role and ours.content == theirs.content
    assert ours.token_usage.input_tokens == theirs.token_usage.input_tokens
    assert ours.token_usage.output_tokens == theirs.token_usage.output_tokens


def test_generate_equals_smolagents_torch_model(models):
    ours, theirs = models
    a, b = ours.generate(MESSAGES), theirs.generate(MESSAGES)
    assert_same(a, b)
    assert a.token_usage.output_tokens > 0 and a.content


def test_stop_sequences_are_honoured_as_smolagents_does(models):
    ours, theirs = models
    full = theirs.generate(MESSAGES).content
    assert len(full) > 4
    stop = full[2:4]
    a, b = ours.generate(MESSAGES, stop_sequences=[stop]), theirs.generate(MESSAGES, stop_sequences=[stop])
    assert_same(a, b)
    assert a.content == full[:full.find(stop)] and a.token_usage.output_tokens < 14


def test_tools_reach_the_chat_template(models):
    ours, theirs = models
    a = ours.generate(MESSAGES, tools_to_call_from=[Weather()])
    b = theirs.generate(MESSAGES, tools_to_call_from=[Weather()])
    assert_same(a, b)
    assert a.token_usage.input_tokens > ours.generate(MESSAGES).token_usage.input_tokens


def test_generate_stream_gives_the_same_text(models):
    ours, _ = models
    pieces = list(ours.generate_stream(MESSAGES))
    assert "".join(p.content for p in pieces) == ours.generate(MESSAGES).content
    assert pieces[0].token_usage.input_tokens == ours.generate(MESSAGES).token_usage.input_tokens


@pytest.mark.parametrize("agent_cls", [CodeAgent, ToolCallingAgent])
def test_agents_run_with_it(models, agent_cls):
    """A random tiny model cannot solve the task: the agent runs its step, then asks for a final answer."""
    ours, _ = models
    agent = agent_cls(tools=[Weather()], model=ours, max_steps=1, verbosity_level=0)
    answer = agent.run("What is the weather in Paris?")
    assert isinstance(answer, str)
    usage = agent.monitor.get_total_token_counts()
    assert usage.input_tokens > 0 and usage.output_tokens > 0


def test_without_smolagents_the_import_error_names_the_install_command():
    code = ("import sys; sys.modules['smolagents'] = None\n"
            "import mindone.transformers, mindone.transformers.agents as a\n"
            "try:\n    a.TransformersModel\nexcept ImportError as e:\n    print(e)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=os.path.join(REPO, "src")))
    assert "pip install smolagents" in result.stdout, result.stderr[-2000:]
