from .modeling_clap import (
    ClapAudioModel,
    ClapAudioModelWithProjection,
    ClapModel,
    ClapPreTrainedModel,
    ClapTextModel,
    ClapTextModelWithProjection,
)
