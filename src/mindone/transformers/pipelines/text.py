"""Text pipelines on encoder models: HF's output formats (dict keys, ordering, score types) for each task."""

import logging

import numpy as np

from .base import Pipeline, sigmoid, softmax

logger = logging.getLogger(__name__)


def _tokenize(tokenizer, text, text_pair=None, **kwargs):
    return dict(tokenizer(text, text_pair, return_tensors="np", truncation=True, **kwargs))


class FeatureExtractionPipeline(Pipeline):
    """Last hidden state per token: nested lists (1, S, H) like HF, or the array with `return_tensors=True`."""

    task = "feature-extraction"

    def _sanitize_parameters(self, return_tensors=False, tokenize_kwargs=None, truncation=None, **kwargs):
        super()._sanitize_parameters(**kwargs)
        pre = dict(tokenize_kwargs or {})
        if truncation is not None:
            pre["truncation"] = truncation
        return pre, {"return_tensors": return_tensors}

    def preprocess(self, item, **kwargs):
        kwargs.setdefault("truncation", True)
        return dict(self.tokenizer(item, return_tensors="np", **kwargs))

    def _forward(self, model_inputs):
        outputs = self.model(**{k: v for k, v in _to_ms(model_inputs).items()})
        first = outputs[0] if not isinstance(outputs, dict) else outputs["last_hidden_state"]
        return {"features": _np(first)}

    def postprocess(self, model_outputs, return_tensors=False):
        features = model_outputs["features"]
        return features if return_tensors else features.tolist()


class TextClassificationPipeline(Pipeline):
    """[{"label", "score"}] (top 1) by default; `top_k` gives that many, sorted; `top_k=None` gives all."""

    task = "text-classification"
    _NOT_GIVEN = object()

    def __call__(self, inputs, **kwargs):
        result = super().__call__(inputs, **kwargs)
        # as HF: a lone string gives a list around its result unless *this call* passes top_k (a top_k given to
        # pipeline(...) still sorts and cuts the labels, but keeps the extra list)
        if isinstance(inputs, str) and "top_k" not in kwargs:
            return [result]
        return result

    def _sanitize_parameters(self, top_k=_NOT_GIVEN, function_to_apply=None, **kwargs):
        if "return_all_scores" in kwargs:
            # HF 5 dropped the argument (it reaches its tokenizer, which ignores it): results are as without it
            kwargs.pop("return_all_scores")
            logger.warning("`return_all_scores` is no longer supported (as in transformers 5) and is ignored; "
                           "use `top_k=None` for the scores of all labels")
        tokenize_kwargs = {k: kwargs.pop(k) for k in ("truncation", "padding", "max_length") if k in kwargs}
        super()._sanitize_parameters(**kwargs)
        legacy = top_k is self._NOT_GIVEN
        return tokenize_kwargs, {"top_k": 1 if legacy else top_k, "function_to_apply": function_to_apply,
                                 "_legacy": legacy}

    def preprocess(self, item, **kwargs):
        if isinstance(item, dict):
            return _tokenize(self.tokenizer, item["text"], item.get("text_pair"), **kwargs)
        return _tokenize(self.tokenizer, item, **kwargs)

    def postprocess(self, model_outputs, top_k=1, function_to_apply=None, _legacy=True):
        config = self.model.config
        logits = model_outputs["logits"][0].astype(np.float64)
        if function_to_apply is None:
            if config.problem_type == "regression":
                function_to_apply = "none"
            elif config.problem_type == "multi_label_classification" or config.num_labels == 1:
                function_to_apply = "sigmoid"
            else:
                function_to_apply = "softmax"
        function_to_apply = str(function_to_apply).lower().replace("classificationfunction.", "")
        if function_to_apply == "sigmoid":
            scores = sigmoid(logits)
        elif function_to_apply == "softmax":
            scores = softmax(logits)
        elif function_to_apply == "none":
            scores = logits
        else:
            raise ValueError(f"Unrecognized `function_to_apply` argument: {function_to_apply}")
        if top_k == 1 and _legacy:
            best = int(scores.argmax())
            return {"label": config.id2label[best], "score": float(scores[best])}
        entries = [{"label": config.id2label[i], "score": float(s)} for i, s in enumerate(scores)]
        if not _legacy:
            entries.sort(key=lambda e: e["score"], reverse=True)
            if top_k is not None:
                entries = entries[:top_k]
        return entries


class FillMaskPipeline(Pipeline):
    """For each mask token: the `top_k` fillings as {"score", "token", "token_str", "sequence"}."""

    task = "fill-mask"

    def _sanitize_parameters(self, top_k=5, targets=None, tokenizer_kwargs=None, **kwargs):
        super()._sanitize_parameters(**kwargs)
        target_ids = None
        if targets is not None:
            targets = [targets] if isinstance(targets, str) else targets
            target_ids = []
            vocab = self.tokenizer.get_vocab()
            for target in targets:
                token_id = vocab.get(target)
                if token_id is None:
                    ids = self.tokenizer(target, add_special_tokens=False)["input_ids"]
                    if not ids:
                        continue
                    token_id = ids[0]
                target_ids.append(token_id)
            target_ids = sorted(set(target_ids))
            top_k = min(top_k, len(target_ids))
        return dict(tokenizer_kwargs or {}), {"top_k": top_k, "target_ids": target_ids}

    def preprocess(self, item, **kwargs):
        inputs = _tokenize(self.tokenizer, item, **kwargs)
        if not (inputs["input_ids"] == self.tokenizer.mask_token_id).any():
            raise ValueError(f"No mask_token ({self.tokenizer.mask_token}) found on the input")
        return inputs

    def postprocess(self, model_outputs, top_k=5, target_ids=None):
        input_ids = model_outputs["input_ids"][0]
        masked = np.nonzero(input_ids == self.tokenizer.mask_token_id)[0]
        single_mask = len(masked) == 1
        results = []
        for position in masked:
            # probabilities over the whole vocabulary, then restricted to the targets (as HF)
            probs = softmax(model_outputs["logits"][0, position].astype(np.float64))
            if target_ids is not None:
                probs = probs[target_ids]
            order = np.argsort(-probs, kind="stable")[:top_k]
            row = []
            for index in order:
                token = int(target_ids[index]) if target_ids is not None else int(index)
                tokens = input_ids.copy()
                tokens[position] = token
                tokens = tokens[tokens != self.tokenizer.pad_token_id]
                row.append({"score": float(probs[index]), "token": token,
                            "token_str": self.tokenizer.decode([token]),
                            "sequence": self.tokenizer.decode(tokens, skip_special_tokens=single_mask)})
            results.append(row)
        return results[0] if single_mask else results


AGGREGATION_STRATEGIES = ("none", "simple", "first", "average", "max")


class TokenClassificationPipeline(Pipeline):
    """Per-token (or, with `aggregation_strategy`, per-word / per-entity) labels, HF's grouping rules."""

    task = "token-classification"

    def _sanitize_parameters(self, aggregation_strategy=None, ignore_labels=None, **kwargs):
        super()._sanitize_parameters(**kwargs)
        strategy = str(aggregation_strategy or "none").lower().replace("aggregationstrategy.", "")
        if strategy not in AGGREGATION_STRATEGIES:
            raise ValueError(f"aggregation_strategy {aggregation_strategy!r}: choose one of {AGGREGATION_STRATEGIES}")
        if strategy in ("first", "average", "max") and not getattr(self.tokenizer, "is_fast", False):
            raise ValueError("Word-level aggregation needs a fast tokenizer (offsets)")
        return {}, {"aggregation_strategy": strategy, "ignore_labels": ignore_labels}

    def preprocess(self, item, **kwargs):
        inputs = _tokenize(self.tokenizer, item, return_special_tokens_mask=True,
                           return_offsets_mapping=getattr(self.tokenizer, "is_fast", False))
        offsets = inputs.pop("offset_mapping", None)
        special = inputs.pop("special_tokens_mask")
        inputs.update(sentence=item, offsets=offsets, special=special)
        return inputs

    def postprocess(self, model_outputs, aggregation_strategy="none", ignore_labels=None):
        ignore_labels = ["O"] if ignore_labels is None else ignore_labels
        scores = softmax(model_outputs["logits"][0].astype(np.float32))
        pre_entities = self._gather_pre_entities(model_outputs, scores, aggregation_strategy)
        entities = self._aggregate(pre_entities, aggregation_strategy)
        return [e for e in entities
                if e.get("entity") not in ignore_labels and e.get("entity_group") not in ignore_labels]

    def _gather_pre_entities(self, out, scores, strategy):
        sentence, input_ids = out["sentence"], out["input_ids"][0]
        offsets = out["offsets"][0] if out["offsets"] is not None else None
        subword_prefix = getattr(getattr(getattr(self.tokenizer, "_tokenizer", None), "model", None),
                                 "continuing_subword_prefix", None)
        pre = []
        for idx, token_scores in enumerate(scores):
            if out["special"][0][idx]:
                continue
            word = self.tokenizer.convert_ids_to_tokens(int(input_ids[idx]))
            start = end = None
            is_subword = False
            if offsets is not None:
                start, end = int(offsets[idx][0]), int(offsets[idx][1])
                word_ref = sentence[start:end]
                if subword_prefix:
                    is_subword = len(word) != len(word_ref)
                else:
                    # HF's fallback for tokenizers without word boundaries
                    is_subword = start > 0 and " " not in sentence[start - 1:start + 1]
                if int(input_ids[idx]) == self.tokenizer.unk_token_id:
                    word, is_subword = word_ref, False
            pre.append({"word": word, "scores": token_scores, "start": start, "end": end, "index": idx,
                        "is_subword": is_subword})
        return pre

    def _aggregate(self, pre_entities, strategy):
        id2label = self.model.config.id2label
        if strategy in ("none", "simple"):
            entities = []
            for p in pre_entities:
                best = int(p["scores"].argmax())
                entities.append({"entity": id2label[best], "score": p["scores"][best], "index": p["index"],
                                 "word": p["word"], "start": p["start"], "end": p["end"]})
        else:
            entities = self._aggregate_words(pre_entities, strategy)
        return entities if strategy == "none" else self._group_entities(entities)

    def _aggregate_word(self, entities, strategy):
        id2label = self.model.config.id2label
        word = self.tokenizer.convert_tokens_to_string([e["word"] for e in entities])
        if strategy == "first":
            scores = entities[0]["scores"]
        elif strategy == "max":
            scores = max(entities, key=lambda e: e["scores"].max())["scores"]
        else:
            scores = np.nanmean(np.stack([e["scores"] for e in entities]), axis=0)
        best = int(scores.argmax())
        return {"entity": id2label[best], "score": scores[best], "word": word, "start": entities[0]["start"],
                "end": entities[-1]["end"]}

    def _aggregate_words(self, entities, strategy):
        words, group = [], None
        for entity in entities:
            if group is None:
                group = [entity]
            elif entity["is_subword"]:
                group.append(entity)
            else:
                words.append(self._aggregate_word(group, strategy))
                group = [entity]
        if group is not None:
            words.append(self._aggregate_word(group, strategy))
        return words

    @staticmethod
    def _tag(name):
        if name.startswith("B-"):
            return "B", name[2:]
        if name.startswith("I-"):
            return "I", name[2:]
        return "I", name  # not in B-/I- format: a continuation

    def _group_sub_entities(self, entities):
        return {"entity_group": entities[0]["entity"].split("-", 1)[-1],
                "score": np.mean(np.nanmean([e["score"] for e in entities])),
                "word": self.tokenizer.convert_tokens_to_string([e["word"] for e in entities]),
                "start": entities[0]["start"], "end": entities[-1]["end"]}

    def _group_entities(self, entities):
        groups, current = [], []
        for entity in entities:
            if not current:
                current.append(entity)
                continue
            bi, tag = self._tag(entity["entity"])
            _, last_tag = self._tag(current[-1]["entity"])
            if tag == last_tag and bi != "B":
                current.append(entity)
            else:
                groups.append(self._group_sub_entities(current))
                current = [entity]
        if current:
            groups.append(self._group_sub_entities(current))
        return groups


class QuestionAnsweringPipeline(Pipeline):
    """Extractive QA: the best context span(s) as {"score", "start", "end", "answer"} (character offsets)."""

    task = "question-answering"

    def __call__(self, *args, **kwargs):
        if args and len(args) == 2:
            inputs = {"question": args[0], "context": args[1]}
        elif args:
            inputs = args[0]
        else:
            question, context = kwargs.pop("question"), kwargs.pop("context")
            if isinstance(question, list):
                inputs = [{"question": q, "context": c} for q, c in
                          zip(question, context if isinstance(context, list) else [context] * len(question))]
            else:
                inputs = {"question": question, "context": context}
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(self, top_k=1, max_answer_len=15, max_seq_len=384, handle_impossible_answer=False,
                             align_to_words=True, **kwargs):
        super()._sanitize_parameters(**kwargs)
        return {"max_seq_len": max_seq_len}, {"top_k": top_k, "max_answer_len": max_answer_len,
                                              "handle_impossible_answer": handle_impossible_answer,
                                              "align_to_words": align_to_words}

    def preprocess(self, item, max_seq_len=384):
        question, context = item["question"], item["context"]
        question_first = self.tokenizer.padding_side == "right"
        pair = (question, context) if question_first else (context, question)
        encoding = self.tokenizer(*pair, truncation="only_second" if question_first else "only_first",
                                  max_length=max_seq_len, return_offsets_mapping=True)
        context_index = 1 if question_first else 0
        p_mask = np.array([sid != context_index for sid in encoding.sequence_ids(0)], np.int64)
        input_ids = np.array(encoding["input_ids"])
        if self.tokenizer.cls_token_id is not None:
            p_mask[input_ids == self.tokenizer.cls_token_id] = 0
        inputs = {k: np.array([encoding[k]], np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")
                  if k in encoding}
        inputs.update(p_mask=p_mask, encoding=encoding, context=context, context_index=context_index)
        return inputs

    def postprocess(self, out, top_k=1, max_answer_len=15, handle_impossible_answer=False, align_to_words=True):
        if max_answer_len < 1:
            raise ValueError(f"max_answer_len parameter should be >= 1 (got {max_answer_len})")
        start = out["start_logits"][0].astype(np.float64)
        end = out["end_logits"][0].astype(np.float64)
        undesired = np.abs(out["p_mask"] - 1) & out["attention_mask"][0]
        start = np.where(undesired == 0, -10000.0, start)
        end = np.where(undesired == 0, -10000.0, end)
        start, end = softmax(start), softmax(end)
        min_null_score = float(start[0] * end[0])
        start[0] = end[0] = 0.0
        starts, ends, scores = _decode_spans(start, end, top_k, max_answer_len, undesired)
        encoding, context, seq = out["encoding"], out["context"], out["context_index"]
        answers = []
        for s, e, score in zip(starts, ends, scores):
            s, e = int(s), int(e)
            if align_to_words:
                try:
                    char_start = encoding.word_to_chars(encoding.token_to_word(s), sequence_index=seq)[0]
                    char_end = encoding.word_to_chars(encoding.token_to_word(e), sequence_index=seq)[1]
                except Exception:
                    char_start, char_end = encoding["offset_mapping"][s][0], encoding["offset_mapping"][e][1]
            else:
                char_start, char_end = encoding["offset_mapping"][s][0], encoding["offset_mapping"][e][1]
            answers.append({"score": float(score), "start": char_start, "end": char_end,
                            "answer": context[char_start:char_end]})
        if handle_impossible_answer:
            answers.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda a: a["score"], reverse=True)[:top_k]
        return answers[0] if len(answers) == 1 else answers


def _decode_spans(start, end, topk, max_answer_len, undesired):
    """HF's span search: score(s, e) = p_start(s) * p_end(e) for s <= e < s + max_answer_len, best `topk`."""
    outer = np.matmul(start[None, :, None], end[None, None, :])
    candidates = np.tril(np.triu(outer), max_answer_len - 1)
    flat = candidates.flatten()
    if topk == 1:
        order = [np.argmax(flat)]
    elif len(flat) < topk:
        order = np.argsort(-flat)
    else:
        idx = np.argpartition(-flat, topk)[0:topk]
        order = idx[np.argsort(-flat[idx])]
    starts, ends = np.unravel_index(order, candidates.shape)[1:]
    allowed = undesired.nonzero()
    keep = np.isin(starts, allowed) & np.isin(ends, allowed)
    starts, ends = starts[keep], ends[keep]
    return starts, ends, candidates[0, starts, ends]


class ZeroShotClassificationPipeline(Pipeline):
    """NLI-based zero-shot: {"sequence", "labels", "scores"} with labels sorted by score."""

    task = "zero-shot-classification"

    def __call__(self, sequences, *args, **kwargs):
        if args:
            kwargs["candidate_labels"] = args[0]
        return super().__call__(sequences, **kwargs)

    def _sanitize_parameters(self, candidate_labels=None, hypothesis_template="This example is {}.",
                             multi_label=False, **kwargs):
        super()._sanitize_parameters(**kwargs)
        if not candidate_labels:
            raise ValueError("You must include at least one label.")
        labels = [candidate_labels] if isinstance(candidate_labels, str) else list(candidate_labels)
        labels = [label.strip() for label in labels[0].split(",")] if len(labels) == 1 else labels
        return {"labels": labels, "template": hypothesis_template}, {"multi_label": multi_label}

    def _entailment_id(self):
        for label, index in self.model.config.label2id.items():
            if label.lower().startswith("entail"):
                return int(index)
        return -1

    def preprocess(self, item, labels=(), template=""):
        if template.format(labels[0]) == template:
            raise ValueError(f'The provided hypothesis_template "{template}" was not able to be formatted with '
                             "the target labels. Make sure the passed template includes formatting syntax such as "
                             "{} where the label should go.")
        parts = []
        for label in labels:
            inputs = _tokenize(self.tokenizer, item, template.format(label))
            inputs.update(sequence=item, candidate_label=label)
            parts.append(inputs)
        return parts

    def postprocess(self, outputs, multi_label=False):
        labels = [o["candidate_label"] for o in outputs]
        logits = np.concatenate([o["logits"] for o in outputs]).astype(np.float64)
        entail = self._entailment_id()
        if multi_label or len(labels) == 1:
            # each label on its own: softmax over (contradiction, entailment); HF's contradiction is label 0, or the
            # last label when entailment is label 0
            contradiction = -1 if entail == 0 else 0
            scores = softmax(logits[:, [contradiction, entail]])[:, 1]
        else:
            scores = softmax(logits[:, entail])
        order = list(reversed(scores.argsort()))
        return {"sequence": outputs[0]["sequence"], "labels": [labels[i] for i in order],
                "scores": [float(scores[i]) for i in order]}


def _to_ms(arrays):
    import mindspore as ms

    return {k: ms.Tensor(v) for k, v in arrays.items()}


def _np(tensor):
    import mindspore as ms

    if tensor.dtype in (ms.float16, ms.bfloat16):
        tensor = tensor.astype(ms.float32)
    return tensor.asnumpy()
