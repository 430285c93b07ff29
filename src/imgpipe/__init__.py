"""imgpipe: a reproducible image-classification workflow of DVC stages and Papermill notebooks."""

__version__ = "0.1.0"
