"""MindFormers' high-level API on this package: `init_context`, `ContextConfig`, `ParallelContextConfig`,
`TrainingArguments`, `Trainer(task=...)` and `pipeline(task="text_generation", ...)`.

    from mindone.transformers.mindformers import Trainer, TrainingArguments, init_context, ContextConfig

The engine is ours (HF-style `Trainer`, our models and pipelines); see docs/mindformers.md for how each MindFormers
argument maps onto it.
"""

from .context import ContextConfig, ParallelContextConfig, init_context
from .pipeline import TextGenerationPipeline, pipeline
from .trainer import Trainer
from .training_args import TrainingArguments

__all__ = ["ContextConfig", "ParallelContextConfig", "TextGenerationPipeline", "Trainer", "TrainingArguments",
           "init_context", "pipeline"]
