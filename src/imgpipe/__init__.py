"""imgpipe: a reproducible image-classification workflow of DVC stages and Papermill notebooks."""

__version__ = "0.1.0"

MODEL_NAMES: tuple[str, ...] = ("cnn", "rnn", "attention")
