"""One module per model family; each defines ``FAMILY`` (see :mod:`imgpipe.models.registry`)."""
