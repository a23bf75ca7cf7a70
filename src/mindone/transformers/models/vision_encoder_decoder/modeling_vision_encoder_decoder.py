"""VisionEncoderDecoder on MindSpore: HF's `modeling_vision_encoder_decoder.py` names, checkpoint keys and outputs.

Any of our vision models as the encoder (built from `config.encoder` through `AutoModel`: ViT, DINOv2, ConvNeXt V2,
CLIP / SigLIP vision towers, ...) and any of our causal LMs with cross-attention as the decoder (built from
`config.decoder` through `AutoModelForCausalLM`: GPT-2 with `add_cross_attention`, BERT / RoBERTa as decoders, ...).
The decoder attends to the encoder's last hidden state, projected by `enc_to_dec_proj` when the two widths differ.
Checkpoint keys are the parts' own under `encoder.` / `decoder.` (plus `enc_to_dec_proj.*`), as HF saves them.

generate(): the image is encoded once; decoding then runs with a cache. With a decoder that supports a static cache
(GPT-2) the decode steps are compiled (`mindspore.jit`) and read the encoder's cross-attention keys/values from an
`EncoderDecoderStaticCache` filled by the first (PyNative) step; other decoders decode in PyNative with a growing
cache.
"""

import logging

import mindspore as ms
from transformers import AutoConfig, VisionEncoderDecoderConfig

from ...backend import functional as F
from ...backend import layers
from ...backend.layers import Linear
from ...generation import GenerationMixin
from ...modeling_outputs import BaseModelOutput, Seq2SeqLMOutput, model_output
from ...modeling_utils import PreTrainedModel
from ..auto.modeling_auto import AutoModel, AutoModelForCausalLM

logger = logging.getLogger(__name__)


def shift_tokens_right(input_ids, pad_token_id, decoder_start_token_id):
    """Decoder inputs from labels: decoder_start_token_id first, the last label dropped, -100 -> pad_token_id."""
    if decoder_start_token_id is None:
        raise ValueError("Make sure to set the decoder_start_token_id attribute of the model's configuration.")
    if pad_token_id is None:
        raise ValueError("Make sure to set the pad_token_id attribute of the model's configuration.")
    start = F.full((input_ids.shape[0], 1), decoder_start_token_id, input_ids.dtype)
    shifted = F.cat([start, input_ids[:, :-1]], -1)
    return shifted.masked_fill(shifted == -100, pad_token_id)


def _as_tuple(outputs):
    """An output as HF's tuple (its non-None fields in order), from a ModelOutput or a graph's dict."""
    return tuple(v for v in outputs.values() if v is not None)


class VisionEncoderDecoderModel(PreTrainedModel, GenerationMixin):
    config_class = VisionEncoderDecoderConfig
    base_model_prefix = "vision_encoder_decoder"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True

    def __init__(self, config: VisionEncoderDecoderConfig = None, encoder: PreTrainedModel = None,
                 decoder: PreTrainedModel = None):
        r"""
        Args:
            config: a `VisionEncoderDecoderConfig`; built from the parts' configs when omitted.
            encoder, decoder: already built parts (e.g. loaded ones); otherwise built from `config.encoder`
                (`AutoModel`) and `config.decoder` (`AutoModelForCausalLM`).
        """
        if config is None and (encoder is None or decoder is None):
            raise ValueError("Either a configuration or an encoder and a decoder has to be provided.")
        if config is None:
            config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder.config, decoder.config)
        elif not isinstance(config, self.config_class):
            raise ValueError(f"Config: {config} has to be of type {self.config_class}")
        cross_size = getattr(config.decoder, "cross_attention_hidden_size", None)
        if cross_size is not None and cross_size != config.encoder.hidden_size:
            raise ValueError("If `cross_attention_hidden_size` is specified in the decoder's configuration, it has to "
                             f"be equal to the encoder's `hidden_size`. Got {cross_size} for "
                             f"`config.decoder.cross_attention_hidden_size` and {config.encoder.hidden_size} for "
                             "`config.encoder.hidden_size`.")
        # the decoder ties its own head (its config decides); the composite has no embeddings of its own
        config.tie_word_embeddings = False
        super().__init__(config)

        if encoder is None:
            encoder = AutoModel.from_config(config.encoder)
        if decoder is None:
            decoder = AutoModelForCausalLM.from_config(config.decoder)
        self.encoder = encoder
        self.decoder = decoder
        for name, part, shared in (("encoder", encoder, config.encoder), ("decoder", decoder, config.decoder)):
            if part.config.to_dict() != shared.to_dict():
                logger.warning("Config of the %s: %s is overwritten by shared %s config: %s", name,
                               type(part).__name__, name, shared)
        # the parts read the shared sub-configs, so a change to `config.decoder` reaches the decoder (as HF)
        self.encoder.config = config.encoder
        self.decoder.config = config.decoder
        if self.encoder.get_output_embeddings() is not None:
            raise ValueError(f"The encoder {type(self.encoder).__name__} should not have a LM Head. Please use a model "
                             "without LM Head")
        if config.encoder.hidden_size != config.decoder.hidden_size and cross_size is None:
            self.enc_to_dec_proj = Linear(config.encoder.hidden_size, config.decoder.hidden_size)
        else:
            self.enc_to_dec_proj = None
        # compiled decoding needs a decoder whose cross-attention reads an EncoderDecoderStaticCache (GPT-2's does)
        self._supports_static_cache = bool(getattr(decoder, "_supports_static_cache", False)
                                           and getattr(decoder, "_caches_cross_attention", False))
        # checkpoint keys the parts ignore are ignored under their prefixes too
        ignored = [p for part in (encoder, decoder) for p in (part._keys_to_ignore_on_load_unexpected or ())]
        if ignored:
            self._keys_to_ignore_on_load_unexpected = ignored
        self.post_init()

    # ------------------------------------------------------------------------------------------------------------
    # parts, tying and initialisation: the parts tie and initialise (or load) themselves; the projection is ours
    # ------------------------------------------------------------------------------------------------------------

    def get_encoder(self):
        return self.encoder

    def get_decoder(self):
        return self.decoder

    def get_input_embeddings(self):
        return self.decoder.get_input_embeddings()

    def get_output_embeddings(self):
        return self.decoder.get_output_embeddings()

    def set_output_embeddings(self, new_embeddings):
        return self.decoder.set_output_embeddings(new_embeddings)

    def _tied_pairs(self):
        return {f"{name}.{target}": f"{name}.{source}" for name in ("encoder", "decoder")
                for target, source in getattr(self, name)._tied_pairs().items()}

    def init_weights(self):
        if self.enc_to_dec_proj is not None:
            self._init_weights(self.enc_to_dec_proj)

    def _initialize_missing(self, keys, params):
        """Missing part weights get their part's own initialisation scheme."""
        own = list(keys)
        for name in ("encoder", "decoder"):
            prefix = name + "."
            part = getattr(self, name)
            part_keys = [k[len(prefix):] for k in keys if k.startswith(prefix)]
            own = [k for k in own if not k.startswith(prefix)]
            part._initialize_missing(part_keys, part.named_parameters_dict())
        super()._initialize_missing(own, params)

    # ------------------------------------------------------------------------------------------------------------
    # forward
    # ------------------------------------------------------------------------------------------------------------

    def construct(self, pixel_values=None, decoder_input_ids=None, decoder_attention_mask=None, encoder_outputs=None,
                  past_key_values=None, decoder_inputs_embeds=None, labels=None, use_cache=None,
                  output_attentions=None, output_hidden_states=None, return_dict=None, cache_position=None, **kwargs):
        r"""
        pixel_values: (B, C, H, W) images for the encoder (or `encoder_outputs`, e.g. from `generate`).
        decoder_input_ids: (B, T) decoder tokens; made from `labels` (shifted right after decoder_start_token_id,
            -100 -> pad_token_id) when only labels are given.
        labels: (B, T) target tokens (-100 ignored); the loss is the mean cross-entropy of the logits at the same
            positions (the decoder inputs are the shifted labels).
        cache_position: (T,) decoder positions written to the cache (generation); kwargs starting with `decoder_`
            go to the decoder without the prefix, the others to the encoder (as HF).
        Returns a `Seq2SeqLMOutput` (the decoder's logits, cache, hidden states, attentions and cross-attentions,
        and the encoder's last hidden state, hidden states and attentions).
        """
        return_dict = return_dict if return_dict is not None else getattr(self.config, "return_dict", True)
        # HF's loss here is a plain mean: num_items_in_batch (Trainer) is not used
        kwargs_encoder = {k: v for k, v in kwargs.items()
                          if not k.startswith("decoder_") and k != "num_items_in_batch"}
        kwargs_decoder = {k[len("decoder_"):]: v for k, v in kwargs.items() if k.startswith("decoder_")}

        if encoder_outputs is None:
            if pixel_values is None:
                raise ValueError("You have to specify pixel_values")
            encoder_outputs = self.encoder(pixel_values=pixel_values, output_attentions=output_attentions,
                                           output_hidden_states=output_hidden_states, return_dict=True,
                                           **kwargs_encoder)
        elif isinstance(encoder_outputs, (tuple, list)):
            n = len(encoder_outputs)
            encoder_outputs = {"last_hidden_state": encoder_outputs[0],
                               "hidden_states": encoder_outputs[1] if n > 1 else None,
                               "attentions": encoder_outputs[2] if n > 2 else None}
        encoder_hidden_states = encoder_outputs["last_hidden_state"]
        if self.enc_to_dec_proj is not None:
            encoder_hidden_states = self.enc_to_dec_proj(encoder_hidden_states)

        if labels is not None and decoder_input_ids is None and decoder_inputs_embeds is None:
            decoder_input_ids = shift_tokens_right(labels, self.config.pad_token_id,
                                                   self.config.decoder_start_token_id)
        if cache_position is not None:
            kwargs_decoder["cache_position"] = cache_position

        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids, attention_mask=decoder_attention_mask,
            encoder_hidden_states=encoder_hidden_states, encoder_attention_mask=None,
            inputs_embeds=decoder_inputs_embeds, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, use_cache=use_cache, past_key_values=past_key_values,
            return_dict=True, **kwargs_decoder,
        )
        logits = decoder_outputs["logits"]

        loss = None
        if labels is not None:
            vocab = self.decoder.config.vocab_size
            loss = F.cross_entropy(logits.astype(ms.float32).reshape(-1, vocab), labels.reshape(-1))

        if return_dict is False:
            head = (loss,) if loss is not None else ()
            return head + _as_tuple(decoder_outputs) + _as_tuple(encoder_outputs)
        return model_output(Seq2SeqLMOutput, {
            "loss": loss,
            "logits": logits,
            "past_key_values": decoder_outputs.get("past_key_values"),
            "decoder_hidden_states": decoder_outputs.get("hidden_states"),
            "decoder_attentions": decoder_outputs.get("attentions"),
            "cross_attentions": decoder_outputs.get("cross_attentions"),
            "encoder_last_hidden_state": encoder_outputs["last_hidden_state"],
            "encoder_hidden_states": encoder_outputs.get("hidden_states"),
            "encoder_attentions": encoder_outputs.get("attentions"),
        }, True)

    def prepare_decoder_input_ids_from_labels(self, labels):
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)

    # ------------------------------------------------------------------------------------------------------------
    # building from a pretrained encoder and decoder
    # ------------------------------------------------------------------------------------------------------------

    @classmethod
    def from_encoder_decoder_pretrained(cls, encoder_pretrained_model_name_or_path=None,
                                        decoder_pretrained_model_name_or_path=None, *model_args, **kwargs):
        """A model from a pretrained vision encoder and a pretrained decoder; cross-attention layers the decoder's
        checkpoint lacks (and `enc_to_dec_proj`) are newly initialised.

        Args:
            encoder_pretrained_model_name_or_path: directory or hub id of the encoder (loaded by `AutoModel`).
            decoder_pretrained_model_name_or_path: directory or hub id of the decoder (`AutoModelForCausalLM`); its
                config gets `is_decoder=True` and `add_cross_attention=True` unless a `decoder_config` is given.
            model_args: passed to the encoder's `from_pretrained`.
            kwargs: `encoder_*` / `decoder_*` arguments go to that part's `from_pretrained` without the prefix
                (`encoder_model=` / `decoder_model=` give an already built part, `encoder_config=` /
                `decoder_config=` a config); the rest updates the `VisionEncoderDecoderConfig`.
        """
        kwargs_encoder = {k[len("encoder_"):]: kwargs.pop(k) for k in list(kwargs) if k.startswith("encoder_")}
        kwargs_decoder = {k[len("decoder_"):]: kwargs.pop(k) for k in list(kwargs) if k.startswith("decoder_")}

        encoder = kwargs_encoder.pop("model", None)
        if encoder is None:
            if encoder_pretrained_model_name_or_path is None:
                raise ValueError("If `encoder_model` is not defined as an argument, a "
                                 "`encoder_pretrained_model_name_or_path` has to be defined.")
            if "config" not in kwargs_encoder:
                encoder_config = AutoConfig.from_pretrained(encoder_pretrained_model_name_or_path)
                if getattr(encoder_config, "is_decoder", False) or getattr(encoder_config, "add_cross_attention",
                                                                           False):
                    logger.info("Initializing %s as a encoder model from a decoder model. Cross-attention and causal "
                                "mask are disabled.", encoder_pretrained_model_name_or_path)
                    encoder_config.is_decoder = False
                    encoder_config.add_cross_attention = False
                kwargs_encoder["config"] = encoder_config
            encoder = AutoModel.from_pretrained(encoder_pretrained_model_name_or_path, *model_args, **kwargs_encoder)

        decoder = kwargs_decoder.pop("model", None)
        if decoder is None:
            if decoder_pretrained_model_name_or_path is None:
                raise ValueError("If `decoder_model` is not defined as an argument, a "
                                 "`decoder_pretrained_model_name_or_path` has to be defined.")
            if "config" not in kwargs_decoder:
                decoder_config = AutoConfig.from_pretrained(decoder_pretrained_model_name_or_path)
                if decoder_config.is_decoder is False or decoder_config.add_cross_attention is False:
                    logger.info("Initializing %s as a decoder model. Cross attention layers are added to it and "
                                "randomly initialized if its architecture allows for cross attention layers.",
                                decoder_pretrained_model_name_or_path)
                    decoder_config.is_decoder = True
                    decoder_config.add_cross_attention = True
                kwargs_decoder["config"] = decoder_config
            if kwargs_decoder["config"].is_decoder is False or kwargs_decoder["config"].add_cross_attention is False:
                logger.warning("Decoder model %s is not initialized as a decoder. In order to initialize it as a "
                               "decoder, make sure that the attributes `is_decoder` and `add_cross_attention` of "
                               "`decoder_config` passed to `.from_encoder_decoder_pretrained(...)` are set to `True` "
                               "or do not pass a `decoder_config` to `.from_encoder_decoder_pretrained(...)`",
                               decoder_pretrained_model_name_or_path)
            decoder = AutoModelForCausalLM.from_pretrained(decoder_pretrained_model_name_or_path, **kwargs_decoder)

        config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder.config, decoder.config, **kwargs)
        config.tie_word_embeddings = False
        # the projection in the dtype the parts were loaded in
        with layers.dtype_scope(decoder.dtype):
            model = cls(encoder=encoder, decoder=decoder, config=config)
        model.set_train(False)
        return model


__all__ = ["VisionEncoderDecoderModel"]
