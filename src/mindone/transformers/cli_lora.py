"""`mindone-transformers lora` and `fuse`: LoRA fine-tuning from jsonl files, like `mlx_lm.lora` / `mlx_lm.fuse`.

    mindone-transformers lora --model M --data train.jsonl [--valid valid.jsonl] --iters 100 [--mask-prompt]
    mindone-transformers fuse --model M --adapter adapters --save-path fused
    mindone-transformers generate --model M --adapter adapters --prompt "..."

`--data` is a jsonl file, or a directory holding train.jsonl (and valid.jsonl). Each line is one of mlx_lm's
formats: {"messages": [{"role": ..., "content": ...}, ...]} (chat), {"prompt": ..., "completion": ...}
(completions) or {"text": ...}. Chat and completions go through the tokenizer's chat template when it has one;
`--mask-prompt` computes the loss on the last assistant message / the completion only. The adapter is written in
peft's format (adapter_config.json + adapter_model.safetensors), loadable by torch `peft`.
"""

import json
import os
import sys

import numpy as np

IGNORE_INDEX = -100


def add_adapter_option(common):
    """`--adapter` among the shared options (before the sub-parsers that copy them are made)."""
    common.add_argument("--adapter", help="LoRA adapter directory (peft format) to apply to --model")


def add_lora_commands(sub, common):
    """Adds `lora` and `fuse` to the CLI's sub-parsers."""
    from .cli import _number, positive_int  # the command line's option checks (cli imports this module)

    lora = sub.add_parser("lora", parents=[common], help="LoRA fine-tuning on jsonl data; writes a peft adapter")
    lora.add_argument("--data", required=True, help="train jsonl file, or a directory with train.jsonl/valid.jsonl")
    lora.add_argument("--valid", help="validation jsonl file (default: valid.jsonl beside a --data directory)")
    lora.add_argument("--iters", type=positive_int, default=100, help="optimizer steps")
    lora.add_argument("--batch-size", type=positive_int, default=4)
    lora.add_argument("--learning-rate", type=_number(float, 0.0, low_open=True, what="must be > 0"), default=1e-4)
    lora.add_argument("--rank", type=positive_int, default=8, help="LoRA rank r")
    lora.add_argument("--alpha", type=_number(float, 0.0, low_open=True, what="must be > 0"), default=16,
                      help="LoRA alpha (the update is scaled by alpha / r)")
    lora.add_argument("--dropout", type=_number(float, 0.0, 1.0, what="must be in [0, 1]"), default=0.0,
                      help="LoRA dropout")
    lora.add_argument("--target-modules", default="q_proj,v_proj",
                      help="comma-separated module names, or all-linear (default q_proj,v_proj)")
    lora.add_argument("--num-layers", type=int, default=-1, help="adapt only the last N layers (-1: all)")
    lora.add_argument("--mask-prompt", action="store_true", help="loss on the completion / last assistant message")
    lora.add_argument("--max-seq-length", type=positive_int, default=2048)
    lora.add_argument("--steps-per-report", type=positive_int, default=10)
    lora.add_argument("--steps-per-eval", type=positive_int, default=50)
    lora.add_argument("--val-batches", type=int, default=25, help="validation batches per evaluation (-1: all)")
    lora.add_argument("--save-every", type=_number(int, 0, what="must be >= 0"), default=0,
                      help="checkpoint every N steps (0: only at the end)")
    lora.add_argument("--adapter-path", default="adapters", help="where the adapter is written")
    lora.add_argument("--grad-checkpoint", action="store_true", help="recompute activations in backward")
    lora.set_defaults(func=cmd_lora)
    fuse = sub.add_parser("fuse", parents=[common], help="merge a LoRA adapter into the model and save it")
    fuse.add_argument("--save-path", default="fused_model", help="directory of the fused model")
    fuse.set_defaults(func=cmd_fuse)


def attach_adapter(model, args):
    """The model with `--adapter` loaded (unchanged without one)."""
    if getattr(args, "adapter", None):
        model.load_adapter(args.adapter)
    return model


# ----------------------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------------------


def read_jsonl(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise SystemExit(f"error: {path}:{number}: not JSON ({e})") from None
    if not rows:
        raise SystemExit(f"error: {path} has no rows")
    return rows


def data_files(args):
    """(train path, validation path or None)."""
    from .cli import UsageError

    if os.path.isdir(args.data):
        train = os.path.join(args.data, "train.jsonl")
        if not os.path.isfile(train):
            raise UsageError(f"--data {args.data}: the directory has no train.jsonl")
        valid = args.valid or os.path.join(args.data, "valid.jsonl")
        return train, valid if os.path.isfile(valid) else None
    if not os.path.isfile(args.data):
        raise UsageError(f"--data {args.data}: no such file or directory")
    return args.data, args.valid


def _template_ids(tokenizer, messages, add_generation_prompt=False):
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True,
                                        return_dict=False)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


def encode_row(tokenizer, row, mask_prompt, where=""):
    """(token ids, number of leading prompt tokens to leave out of the loss) for one jsonl row."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if "messages" in row or ("prompt" in row and "completion" in row):
        messages = row.get("messages") or [{"role": "user", "content": row["prompt"]},
                                           {"role": "assistant", "content": row["completion"]}]
        if has_template:
            ids = _template_ids(tokenizer, messages)
            prompt = _template_ids(tokenizer, messages[:-1], add_generation_prompt=True) if mask_prompt else []
            return ids, len(prompt)
        if "prompt" not in row:
            raise SystemExit(f"error: {where}: chat rows need a tokenizer with a chat template")
        prompt = tokenizer(row["prompt"])["input_ids"]
        ids = tokenizer(row["prompt"] + row["completion"])["input_ids"]
        return _with_eos(tokenizer, ids), len(prompt) if mask_prompt else 0
    if "text" in row:
        if mask_prompt:
            raise SystemExit(f"error: {where}: --mask-prompt needs chat or prompt/completion rows, not text rows")
        return _with_eos(tokenizer, tokenizer(row["text"])["input_ids"]), 0
    raise SystemExit(f"error: {where}: a row needs 'messages', 'prompt' and 'completion', or 'text'; got keys "
                     f"{sorted(row)}")


def _with_eos(tokenizer, ids):
    ids = list(ids)
    if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids.append(tokenizer.eos_token_id)
    return ids


def build_rows(tokenizer, path, mask_prompt, max_seq_length):
    """Training rows (input_ids, attention_mask, labels), all padded to the longest row (one compiled shape)."""
    encoded = []
    for i, row in enumerate(read_jsonl(path), 1):
        ids, offset = encode_row(tokenizer, row, mask_prompt, where=f"{path}:{i}")
        if len(ids) > max_seq_length:
            ids = ids[:max_seq_length]
        if offset >= len(ids):
            raise SystemExit(f"error: {path}:{i}: nothing left to train on after masking the prompt "
                             f"({offset} prompt tokens, {len(ids)} in all)")
        encoded.append((ids, offset))
    length = max(len(ids) for ids, _ in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    rows = []
    for ids, offset in encoded:
        input_ids = np.full(length, pad, np.int64)
        input_ids[: len(ids)] = ids
        mask = np.zeros(length, np.int64)
        mask[: len(ids)] = 1
        labels = np.full(length, IGNORE_INDEX, np.int64)
        labels[offset: len(ids)] = ids[offset:]
        rows.append({"input_ids": input_ids, "attention_mask": mask, "labels": labels})
    return rows


# ----------------------------------------------------------------------------------------------------------------
# commands
# ----------------------------------------------------------------------------------------------------------------


def lora_config(args, model):
    from .peft import LoraConfig

    targets = args.target_modules.strip()
    targets = targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    layers = None
    if args.num_layers is not None and args.num_layers >= 0:
        total = model.config.get_text_config().num_hidden_layers
        layers = list(range(max(total - args.num_layers, 0), total))
    return LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=args.dropout, target_modules=targets,
                      layers_to_transform=layers, task_type="CAUSAL_LM")


def cmd_lora(args):
    from .cli import UsageError, load
    from .peft import get_peft_model
    from .trainer import Trainer, TrainerCallback, TrainingArguments

    if args.adapter:
        raise UsageError("lora trains a new adapter; --adapter is for generate / chat / fuse")
    train_path, valid_path = data_files(args)
    model, tokenizer = load(args)
    train_rows = build_rows(tokenizer, train_path, args.mask_prompt, args.max_seq_length)
    valid_rows = build_rows(tokenizer, valid_path, args.mask_prompt, args.max_seq_length) if valid_path else None
    if valid_rows is not None and args.val_batches > 0:
        valid_rows = valid_rows[: args.val_batches * args.batch_size]
    model = get_peft_model(model, lora_config(args, model))
    trainable, total = model.get_nb_trainable_parameters()
    print(f"Trainable parameters: {100 * trainable / total:.3f}% ({trainable:,d}/{total:,d})", flush=True)
    print(f"Training on {len(train_rows)} rows" + (f", validating on {len(valid_rows)}" if valid_rows else ""),
          flush=True)

    class Report(TrainerCallback):
        def on_log(self, args_, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "eval_loss" in logs:
                print(f"Iter {state.global_step}: Val loss {logs['eval_loss']:.3f}", flush=True)
            elif "loss" in logs:
                print(f"Iter {state.global_step}: Train loss {logs['loss']:.3f}, Learning Rate "
                      f"{logs.get('learning_rate', 0.0):.3e}", flush=True)

    evaluate = valid_rows is not None and args.steps_per_eval > 0
    training_args = TrainingArguments(
        output_dir=args.adapter_path, max_steps=args.iters, per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size, learning_rate=args.learning_rate, lr_scheduler_type="constant",
        logging_steps=args.steps_per_report, eval_strategy="steps" if evaluate else "no",
        eval_steps=args.steps_per_eval if evaluate else None, save_strategy="steps" if args.save_every else "no",
        save_steps=args.save_every or 500, seed=args.seed if args.seed is not None else 0, disable_tqdm=True,
        gradient_checkpointing=args.grad_checkpoint, report_to="none")
    trainer = Trainer(model=model, args=training_args, train_dataset=train_rows, eval_dataset=valid_rows,
                      callbacks=[Report()])
    if valid_rows is not None:
        trainer.evaluate()  # reported as "Iter 0: Val loss ..." by the callback
    trainer.train()
    if valid_rows is not None and (not evaluate or args.iters % args.steps_per_eval):
        trainer.evaluate()
    model.save_pretrained(args.adapter_path)
    print(f"Saved adapter to {args.adapter_path}", flush=True)
    return 0


def cmd_fuse(args):
    from .cli import UsageError, load

    if not args.adapter:
        raise UsageError("fuse needs --adapter PATH")
    from .peft import tuners

    model, tokenizer = load(args)
    fused = tuners.unload(model, merge=True)
    fused.save_pretrained(args.save_path)
    tokenizer.save_pretrained(args.save_path)
    sys.stderr.write(f"Saved the fused model to {args.save_path}\n")
    return 0

