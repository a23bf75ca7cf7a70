"""Throughput of `mindone-transformers serve` with 1, 4 and 16 concurrent clients (official `openai` client).

The server runs in this process (uvicorn on a free loopback port, in a thread) on the embedded SmolLM2-135M-Instruct
GGUF; each client thread sends --requests-per-client greedy chat completions of --max-tokens tokens (the
`ignore_eos`-free way to fix the length: a prompt asking for a long answer, and the measured completion tokens are
counted from `usage`). Prints a markdown table (no assertions):

    python benchmarks/bench_serve.py [--clients 1 4 16] [--max-tokens 32] [--requests-per-client 2]

Columns: completion tok/s = all completion tokens / wall time of the run; latency = mean seconds per request.
"""

import argparse
import os
import socket
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))


def start_server(model, tokenizer):
    import uvicorn

    from mindone.transformers.serve import build_app

    app = build_app(model, tokenizer, "smollm2")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}/v1"


def run(base, clients, per_client, max_tokens):
    import openai

    latencies, tokens, errors = [], [], []
    topics = ["the sea", "mountains", "Paris", "computers", "music", "trees", "rivers", "the moon"]

    def client(i):
        c = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=3600)
        for j in range(per_client):
            started = time.perf_counter()
            try:
                r = c.chat.completions.create(
                    model="smollm2", temperature=0, max_tokens=max_tokens,
                    messages=[{"role": "user", "content": f"Write a long essay about {topics[(i + j) % 8]}."}])
            except Exception as e:  # noqa: BLE001 - counted and printed
                errors.append(repr(e))
                continue
            latencies.append(time.perf_counter() - started)
            tokens.append(r.usage.completion_tokens)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return dict(requests=len(latencies), errors=len(errors), tokens=sum(tokens), wall=wall,
                tps=sum(tokens) / wall, latency=statistics.mean(latencies) if latencies else float("nan"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--requests-per-client", type=int, default=2)
    args = parser.parse_args()

    from mindone.transformers.cli import build_parser, load

    model, tokenizer = load(build_parser().parse_args(["serve"]))
    server, thread, base = start_server(model, tokenizer)
    try:
        run(base, 1, 1, args.max_tokens)  # warm-up: compiles the decode graphs
        print("| clients | requests | errors | completion tokens | wall s | completion tok/s | mean latency s |")
        print("|---|---|---|---|---|---|---|")
        for n in args.clients:
            r = run(base, n, args.requests_per_client, args.max_tokens)
            print(f"| {n} | {r['requests']} | {r['errors']} | {r['tokens']} | {r['wall']:.1f} | {r['tps']:.1f} | "
                  f"{r['latency']:.2f} |", flush=True)
    finally:
        server.should_exit = True
        thread.join(timeout=60)


if __name__ == "__main__":
    main()
