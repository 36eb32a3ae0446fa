"""Tasks: labelled corpora, prompts + verbalizers, classifiers over a model, partitioning."""

from fedzo.tasks.batching import Batch
from fedzo.tasks.classifiers import Classifier, EncoderClassifier, PromptClassifier, build_classifier
from fedzo.tasks.partition import PARTITION_KINDS, PartitionKind, label_histogram, partition
from fedzo.tasks.registry import TASK_NAMES, load_task
from fedzo.tasks.types import SPLITS, Example, Prompt, Task

__all__ = [
    "PARTITION_KINDS",
    "SPLITS",
    "TASK_NAMES",
    "Batch",
    "Classifier",
    "EncoderClassifier",
    "Example",
    "PartitionKind",
    "Prompt",
    "PromptClassifier",
    "Task",
    "build_classifier",
    "label_histogram",
    "load_task",
    "partition",
]
