"""Snakemake script: train the embedded model of a model config into a directory.

Rule contract: ``params.settings`` is the config's ``embedded:`` block (a dict) and
``output.model_dir`` is a ``directory()`` output.
"""

from lenslab.embedded.train import train_embedded_model
from lenslab.joblog import start_log

start_log(snakemake)  # everything this job prints goes to its rule's log

settings = dict(snakemake.params.settings)
train_embedded_model(settings, snakemake.output.model_dir, progress=True)
