"""Rule difference (F1 table): hidden-state differences of each clean/corrupt pair."""

import pandas as pd

from lenslab.difference import pair_difference, with_final_norm
from lenslab.errors import LensLabError
from lenslab.extract import load_activations
from lenslab.gate import load_model
from lenslab.io import write_parquet
from lenslab.joblog import start_log
from lenslab.prompts import encode_set
from lenslab.runtime import setup

start_log(snakemake)  # everything this job prints goes to its rule's log

setup()
params = snakemake.params
pairs = params.prompts["pairs"]
if not pairs:
    raise LensLabError(
        f"prompt set {params.prompts['name']!r} has no pairs, which F1 needs",
        fix="add `pairs: [{clean: <id>, corrupt: <id>}]` to the prompt set",
    )
adapter = load_model(params.model, params.model_path)
encoded = {
    p.id: p for p in encode_set(adapter.tokenizer, params.prompts, params.model.get("prepend_bos"))
}
acts = load_activations(snakemake.input.acts)
states = {
    pid: with_final_norm(r, adapter.normalize, adapter.unembed.weight.dtype)
    for pid, r in zip(acts.prompt_ids, acts.resid, strict=True)
}
tables = [
    pair_difference(
        encoded[p["clean"]],
        encoded[p["corrupt"]],
        states[p["clean"]],
        states[p["corrupt"]],
        p.get("align", "strict"),
    )
    for p in pairs
]
write_parquet(pd.concat(tables, ignore_index=True), snakemake.output.table)
