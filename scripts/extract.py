"""Rule extract: tokens and residual stream of one prompt set under one model."""

from pathlib import Path

from lenslab.config import canonical_json
from lenslab.extract import extract, save_activations
from lenslab.gate import load_model
from lenslab.joblog import start_log
from lenslab.prompts import encode_set
from lenslab.runtime import setup

start_log(snakemake)  # everything this job prints goes to its rule's log

setup()
params = snakemake.params
adapter = load_model(params.model, params.model_path)
prompts = encode_set(adapter.tokenizer, params.prompts, params.model.get("prepend_bos"))
acts = extract(adapter, prompts, batch_size=params.extract.get("batch_size", 8))
acts.meta = {
    "model": params.model["name"],
    "prompts": params.prompts["name"],
    "model_config": canonical_json(params.model),
}
save_activations(acts, Path(snakemake.output.resid).parent, adapter.tokenizer)
