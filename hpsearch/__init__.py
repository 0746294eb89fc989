"""hpsearch: hyperparameter search over head-probing schedules for finetuning."""

__version__ = "0.1.0"
