"""Rule findings: the README's claims, measured on this run (lenslab.findings)."""

import json
from pathlib import Path

import pandas as pd

from lenslab import findings
from lenslab.io import write_parquet
from lenslab.skipped import skipped

inp = snakemake.input
rows = findings.training_findings(json.loads((Path(inp.model_dir) / "metrics.json").read_text()))
rows += findings.rome_findings(pd.read_parquet(inp.patching), "patching")
rows += findings.emergence_findings(pd.read_parquet(inp.tracked), "lens (logit, tracked)")
rows += findings.tuned_lens_findings(pd.read_parquet(inp.tuned), "tuned_lens eval")
for path in inp.jlens:  # present when the study applies the J-lens
    rows += findings.jacobian_lens_findings(pd.read_parquet(path), "jacobian_lens eval")
for path in inp.atp:  # F13c, where the study names its set; a gate's skip marker adds nothing
    summary = pd.read_parquet(path)
    if not skipped(summary):
        rows += findings.atp_findings(summary, "atp summary")
table = findings.findings_table(rows, snakemake.params.model)
print(table[["finding", "value", "op", "threshold", "holds"]].to_string(index=False))
write_parquet(table, snakemake.output.table)
