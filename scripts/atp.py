"""Rule atp (F13c tables): AtP / AtP* of every head, MLP and residual node of one prompt set
under one model, with exact patching of the top-k and a random sample in the same run."""

import dataclasses
import logging

from lenslab.gate import load_model
from lenslab.io import write_parquet
from lenslab.joblog import start_log
from lenslab.patching.atp_check import run_atp
from lenslab.patching.config import parse_atp_config, parse_config
from lenslab.runtime import setup
from lenslab.skipped import skip_reason, write_skipped_table

start_log(snakemake)  # everything this job prints goes to its rule's log

logging.basicConfig(level=logging.INFO)
setup()
params, out = snakemake.params, snakemake.output
pcfg, acfg = parse_config(params.patching), parse_atp_config(params.atp)
adapter = load_model(params.model, params.model_path)
# AtP itself needs residual completeness; each kind's check needs its exact patch.
reasons = {k: skip_reason(adapter, "atp", f"patch_{k}") for k in acfg.kinds}
if any(reasons.values()):
    print(f"atp {params.model['name']}: skipping kinds {[k for k, r in reasons.items() if r]}")
    acfg = dataclasses.replace(acfg, kinds=tuple(k for k, r in reasons.items() if not r))
if not acfg.kinds:
    reason = "; ".join(sorted(set(reasons.values())))
    for path in (out.nodes, out.summary, out.misses):
        write_skipped_table(path, reason)
else:
    tables = run_atp(adapter, params.prompts, pcfg, acfg, params.model.get("prepend_bos"))
    print(tables["summary"].to_string(index=False))
    for name in ("nodes", "summary", "misses"):
        write_parquet(tables[name], getattr(out, name))
