"""Snakemake script: convert a model config's GGUF file into an HF directory.

Rule contract: ``params.gguf`` is the config's ``gguf:`` block, ``params.cache_dir`` where
wheels are cached, and ``output.model_dir`` a ``directory()`` output.
"""

from lenslab.joblog import start_log
from lenslab.models.gguf import convert_gguf
from lenslab.runtime import setup

start_log(snakemake)  # everything this job prints goes to its rule's log
setup()
record = convert_gguf(
    dict(snakemake.params.gguf),
    snakemake.output.model_dir,
    snakemake.params.cache_dir,
    model=snakemake.wildcards.model,
)
print(record)
