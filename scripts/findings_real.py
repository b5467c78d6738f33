"""Rule findings_real: the seeds' claims measured on a real model (lenslab.findings)."""

import pandas as pd

from lenslab import findings
from lenslab.io import write_parquet
from lenslab.joblog import start_log

start_log(snakemake)  # everything this job prints goes to its rule's log

inp, sets = snakemake.input, snakemake.params.sets
lens = pd.read_parquet(inp.lens)
n_layers = int(lens["layer"].max())
rows = findings.logit_kl_findings(lens, f"lens (logit, {sets['lens']})")
if hasattr(inp, "tuned"):  # Namedlist: `in` tests values, not names
    rows += findings.tuned_vs_logit_findings(pd.read_parquet(inp.tuned), "tuned_lens eval")
rows += findings.rome_real_findings(
    pd.read_parquet(inp.patching), n_layers, f"patching ({sets['patching']})"
)
if hasattr(inp, "identity"):
    rows += findings.patchscope_findings(
        pd.read_parquet(inp.identity), n_layers, f"patchscopes ({sets['patchscope']})"
    )
if hasattr(inp, "lookahead"):
    rows += findings.lookahead_findings(
        pd.read_parquet(inp.lookahead), f"lens (logit, {sets['lookahead']})"
    )
table = findings.findings_table(rows, snakemake.params.model)
print(table[["finding", "value", "ci_low", "ci_high", "op", "threshold", "holds"]].to_string())
write_parquet(table, snakemake.output.table)
