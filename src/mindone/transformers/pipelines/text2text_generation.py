"""text2text-generation, summarization and translation on encoder-decoder models (T5, BART, M2M100 / NLLB): HF
4.x's pipelines.

transformers 5 removed these torch pipelines; the behaviour follows their 4.x documentation: the model config's
`prefix` (or the task's `task_specific_params` entry, e.g. T5's "summarize: " / "translate English to German: ")
is put before each text, `model.generate` runs on the encoder input, and every input gives a list of
{"generated_text" | "summary_text" | "translation_text": ...} records (one per returned sequence; a list of strings
with one sequence each gives a flat list). Translation with a multilingual tokenizer (M2M100, NLLB) takes
`src_lang` / `tgt_lang` (or the task name "translation_xx_to_yy"): the tokenizer's `_build_translation_inputs` sets
the source language and returns the target language as `forced_bos_token_id`, which goes to `generate`.
"""

import logging

import numpy as np

from .base import Pipeline

logger = logging.getLogger(__name__)


class Text2TextGenerationPipeline(Pipeline):
    """Call arguments: `return_tensors` (token ids instead of text), `return_text`, `clean_up_tokenization_spaces`,
    `truncation`; everything else goes to `generate` (max_new_tokens, num_beams, num_return_sequences...)."""

    task = "text2text-generation"
    return_name = "generated"

    def __init__(self, model, tokenizer=None, task=None, **kwargs):
        super().__init__(model, tokenizer=tokenizer, **kwargs)
        task = task or self.task
        params = getattr(model.config, "task_specific_params", None) or {}
        if task in params:
            # HF applies the task's defaults (prefix, generation lengths, beams) to the model's configs
            model.config.update(params[task])
            if model.generation_config is not None:
                model.generation_config.update(**params[task])

    def __call__(self, inputs, **kwargs):
        result = super().__call__(inputs, **kwargs)
        if isinstance(inputs, (list, tuple)) and all(isinstance(x, str) for x in inputs) \
                and all(len(r) == 1 for r in result):
            return [r[0] for r in result]
        return result

    def _sanitize_parameters(self, return_tensors=None, return_text=None, return_type=None,
                             clean_up_tokenization_spaces=None, truncation=None, src_lang=None, tgt_lang=None,
                             **generate_kwargs):
        pre = {"truncation": truncation}
        if src_lang is not None or tgt_lang is not None:
            pre.update(src_lang=src_lang, tgt_lang=tgt_lang)
        post = {"return_tensors": bool(return_tensors) and not return_text,
                "clean_up_tokenization_spaces": clean_up_tokenization_spaces}
        self._generate_kwargs = generate_kwargs
        return pre, post

    def check_inputs(self, input_length, min_length, max_length):
        return True

    def preprocess(self, item, truncation=None):
        if not isinstance(item, str):
            raise TypeError(f" `args[0]`: {item} have the wrong format. The should be either of type `str` or type "
                            "`list`")
        prefix = getattr(self.model.config, "prefix", None) or ""
        kwargs = {} if truncation is None else {"truncation": truncation}
        encoded = self.tokenizer(prefix + item, return_tensors="np", **kwargs)
        return {"input_ids": np.asarray(encoded["input_ids"]), "attention_mask": np.asarray(encoded["attention_mask"])}

    def _run_group(self, prepared):
        return [self._generate(p) for p in prepared]

    def _generate(self, p):
        gc = self.model.generation_config
        self.check_inputs(p["input_ids"].shape[-1], self._generate_kwargs.get("min_length", gc.min_length),
                          self._generate_kwargs.get("max_length", gc.max_length))
        # inputs may carry generate arguments (a translation tokenizer's forced_bos_token_id); call kwargs win
        generate_kwargs = {**{k: v for k, v in p.items() if k not in ("input_ids", "attention_mask")},
                           **self._generate_kwargs}
        out = self.model.generate(p["input_ids"], attention_mask=p["attention_mask"], **generate_kwargs)
        sequences = out.sequences if hasattr(out, "sequences") else out
        sequences = sequences.asnumpy() if hasattr(sequences, "asnumpy") else np.asarray(sequences)
        return dict(p, sequences=sequences)

    def postprocess(self, out, return_tensors=False, clean_up_tokenization_spaces=None):
        records = []
        for ids in out["sequences"]:
            if return_tensors:
                records.append({f"{self.return_name}_token_ids": ids})
            else:
                text = self.tokenizer.decode(ids, skip_special_tokens=True,
                                             clean_up_tokenization_spaces=clean_up_tokenization_spaces)
                records.append({f"{self.return_name}_text": text})
        return records


class SummarizationPipeline(Text2TextGenerationPipeline):
    """Summaries as {"summary_text"}; T5's "summarize: " prefix comes from its task_specific_params."""

    task = "summarization"
    return_name = "summary"

    def check_inputs(self, input_length, min_length, max_length):
        if max_length is not None and min_length is not None and max_length < min_length:
            logger.warning("Your min_length=%d must be inferior than your max_length=%d.", min_length, max_length)
        if max_length is not None and input_length < max_length:
            logger.warning("Your max_length is set to %d, but your input_length is only %d. Since this is a "
                           "summarization task, where outputs shorter than the input are typically wanted, you might "
                           "consider decreasing max_length manually, e.g. summarizer('...', max_length=%d)",
                           max_length, input_length, input_length // 2)
        return True


class TranslationPipeline(Text2TextGenerationPipeline):
    """Translations as {"translation_text"}; the task "translation_xx_to_yy" picks T5's
    "translate <xx> to <yy>: " prefix from its task_specific_params."""

    task = "translation"
    return_name = "translation"

    def __init__(self, model, tokenizer=None, task=None, **kwargs):
        super().__init__(model, tokenizer=tokenizer, task=task, **kwargs)
        self.src_lang, self.tgt_lang = parse_translation_task(task)

    def _sanitize_parameters(self, src_lang=None, tgt_lang=None, **kwargs):
        if src_lang is None and tgt_lang is None:
            # HF's backward compatibility: "translation_en_to_fr" names the languages
            src_lang, tgt_lang = self.src_lang, self.tgt_lang
        return super()._sanitize_parameters(src_lang=src_lang, tgt_lang=tgt_lang, **kwargs)

    def preprocess(self, item, truncation=None, src_lang=None, tgt_lang=None):
        build = getattr(self.tokenizer, "_build_translation_inputs", None)
        if build is None:
            return super().preprocess(item, truncation=truncation)
        if not isinstance(item, str):
            raise TypeError(f" `args[0]`: {item} have the wrong format. The should be either of type `str` or type "
                            "`list`")
        kwargs = {} if truncation is None else {"truncation": truncation}
        encoded = build(item, return_tensors="np", src_lang=src_lang, tgt_lang=tgt_lang, **kwargs)
        out = {"input_ids": np.asarray(encoded["input_ids"]), "attention_mask": np.asarray(encoded["attention_mask"])}
        if "forced_bos_token_id" in encoded:
            out["forced_bos_token_id"] = int(encoded["forced_bos_token_id"])
        return out

    def check_inputs(self, input_length, min_length, max_length):
        if max_length is not None and input_length > 0.9 * max_length:
            logger.warning("Your input_length: %d is bigger than 0.9 * max_length: %d. You might consider increasing "
                           "your max_length manually, e.g. translator('...', max_length=400)", input_length,
                           max_length)
        return True


def parse_translation_task(task):
    """("xx", "yy") of "translation_xx_to_yy", (None, None) for "translation"."""
    if task and task.startswith("translation_"):
        parts = task.split("_")
        if len(parts) == 4 and parts[2] == "to":
            return parts[1], parts[3]
        raise KeyError(f"Invalid translation task {task}, use 'translation_XX_to_YY' format")
    return None, None
