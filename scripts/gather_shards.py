"""Rules gather_lens and gather_patching: concatenate per-shard tables in shard order."""

from lenslab.io import read_parquet, write_parquet
from lenslab.runtime import setup
from lenslab.shards import gather

setup(uses_torch=False)
offsets = snakemake.params.offsets
for name, paths in snakemake.input.items():
    if name == "code":
        continue
    if isinstance(paths, str):
        paths = [paths]
    write_parquet(gather([read_parquet(p) for p in paths], offsets), snakemake.output[name])
