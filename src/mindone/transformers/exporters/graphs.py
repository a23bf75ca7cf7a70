"""The Cells `mindspore.export` traces: a model's forward with positional tensor inputs and a tuple of outputs."""

from mindspore import nn, ops

from ..cache_utils import Cache, EncoderDecoderCache


class TextGraph(nn.Cell):
    def __init__(self, model, outputs):
        super().__init__()
        self.model = model
        self.outputs = outputs

    def construct(self, input_ids, attention_mask):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        return _select(out, self.outputs)


class TextGraphWithSegments(TextGraph):
    def construct(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                         return_dict=True)
        return _select(out, self.outputs)


class ImageGraph(TextGraph):
    def construct(self, pixel_values):
        return _select(self.model(pixel_values=pixel_values, return_dict=True), self.outputs)


def _select(out, names):
    values = ()
    for name in names:
        values = values + (out[name],)
    return values


class CausalLMStep(nn.Cell):
    """One forward step of a causal LM over an explicit static KV cache: the cache comes in as inputs
    (past key, past value of every layer), is written into the model's `StaticCache` storage, updated by the forward
    at `cache_position`, and goes out again after the logits. Every call overwrites the whole storage, so the graph
    computes a pure function of its inputs."""

    def __init__(self, model, cache):
        super().__init__()
        self.model = model
        self.cache = cache
        self.num_layers = len(cache)

    def construct(self, input_ids, attention_mask, position_ids, cache_position, *past):
        for i in range(self.num_layers):
            ops.assign(self.cache.key_cache[i], past[2 * i])
            ops.assign(self.cache.value_cache[i], past[2 * i + 1])
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            past_key_values=self.cache, cache_position=cache_position, use_cache=True,
                            return_dict=True)["logits"]
        out = (logits,)
        for i in range(self.num_layers):
            # read after the forward's in-place writes (ordered by `depend`); `* 1` makes each output its own tensor
            out = out + (ops.depend(self.cache.key_cache[i], logits) * 1,
                         ops.depend(self.cache.value_cache[i], logits) * 1)
        return out


class Seq2SeqEncoder(nn.Cell):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def construct(self, input_ids, attention_mask):
        # a tuple: an output class cannot be built from graph values
        return (self.encoder(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)[0],)


class RecomputedCrossAttention(Cache, nn.Cell):
    """A cross-attention "cache" that keeps nothing: every decoder step projects the encoder output again, so the
    exported decoder step needs no cross-attention state."""

    def __init__(self):
        nn.Cell.__init__(self)

    def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
        return key_states, value_states

    def get_seq_length(self, layer_idx=0):
        return 0

    def get_max_cache_shape(self):
        return None


class _NothingProjected(dict):
    """`is_updated` of a `StepCache`: never records a layer, so every call of the step (the PyNative shape probe
    before the export, then the traced graph) projects the encoder output again."""

    def __setitem__(self, layer_idx, value):
        pass


class StepCache(EncoderDecoderCache, nn.Cell):
    def __init__(self, self_attention_cache):
        nn.Cell.__init__(self)
        self.self_attention_cache = self_attention_cache
        self.cross_attention_cache = RecomputedCrossAttention()
        self.is_updated = _NothingProjected()


class Seq2SeqDecoderStep(nn.Cell):
    """One decoder step of an encoder-decoder model over an explicit static self-attention KV cache (inputs in,
    updated cache out, as `CausalLMStep`); cross-attention keys/values are projected from `encoder_hidden_states`."""

    def __init__(self, model, self_attention_cache):
        super().__init__()
        self.model = model
        self.cache = StepCache(self_attention_cache)
        self.num_layers = len(self_attention_cache)

    def construct(self, decoder_input_ids, encoder_hidden_states, encoder_attention_mask, cache_position, *past):
        storage = self.cache.self_attention_cache
        for i in range(self.num_layers):
            ops.assign(storage.key_cache[i], past[2 * i])
            ops.assign(storage.value_cache[i], past[2 * i + 1])
        logits = self.model(decoder_input_ids=decoder_input_ids, encoder_outputs=(encoder_hidden_states,),
                            attention_mask=encoder_attention_mask, past_key_values=self.cache,
                            cache_position=cache_position, use_cache=True, return_dict=True)["logits"]
        out = (logits,)
        for i in range(self.num_layers):
            out = out + (ops.depend(storage.key_cache[i], logits) * 1, ops.depend(storage.value_cache[i], logits) * 1)
        return out
