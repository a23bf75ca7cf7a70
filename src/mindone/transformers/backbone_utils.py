"""HF's `BackboneMixin` for our backbones (`ConvNextBackbone`, `SwinBackbone`, ...): which stages a backbone returns,
read from the config's `stage_names` / `out_features` / `out_indices` (transformers' `BackboneConfigMixin`)."""


class BackboneMixin:
    """Needs `self.config` and, set by the model, `self.num_features` (channels of every stage, stem first)."""

    @property
    def stage_names(self):
        return list(self.config.stage_names)

    @property
    def out_features(self):
        return list(self.config.out_features)

    @property
    def out_indices(self):
        return list(self.config.out_indices)

    @property
    def channels(self):
        return [self.num_features[i] for i in self.out_indices]

    def forward_with_filtered_kwargs(self, *args, **kwargs):
        """Calls the backbone with only the keyword arguments its `construct` accepts."""
        import inspect

        accepted = inspect.signature(self.construct).parameters
        return self(*args, **{k: v for k, v in kwargs.items() if k in accepted})


def load_backbone(config):
    """The backbone for `config.backbone_config` (or `config` itself), randomly initialised: its weights come with
    the parent model's checkpoint."""
    from .models.auto.modeling_auto import AutoBackbone

    backbone_config = getattr(config, "backbone_config", None)
    return AutoBackbone.from_config(backbone_config if backbone_config is not None else config)
