# Loaded by `make lab` (JUPYTER_CONFIG_PATH=.jupyter): notebooks are saved without outputs,
# so saving a stage notebook in JupyterLab changes its DVC hash only when its code changes.
# The executed copies, with outputs, are under reports/.
from imgpipe.pipeline.hygiene import strip_before_save

c.FileContentsManager.pre_save_hook = strip_before_save  # noqa: F821 (c is provided by Jupyter)
