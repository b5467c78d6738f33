"""Rule eval_tuned_lens: tuned vs logit lens on held-out text (F7) and drift matrices (F8)."""

from pathlib import Path

from lenslab.gate import load_model
from lenslab.io import write_parquet
from lenslab.joblog import start_log
from lenslab.lenses.logit import LogitLens
from lenslab.lenses.tuned import TunedLens
from lenslab.lenses.tuned_config import load_documents, make_windows, parse_settings
from lenslab.lenses.tuned_eval import drift_table, evaluate_lenses
from lenslab.runtime import setup

start_log(snakemake)  # everything this job prints goes to its rule's log

params = snakemake.params
settings = parse_settings(params.tuned)
setup(seed=settings.eval.seed)
adapter = load_model(params.model, params.model_path)
tuned = TunedLens.load(Path(snakemake.input.params).parent, adapter)
lenses = {"logit": LogitLens(adapter), "tuned": tuned}
docs = load_documents(settings.text, params.model, "eval", params.model_path)
windows = make_windows(adapter.tokenizer, docs, settings.train.seq_len)
table = evaluate_lenses(adapter, lenses, windows, settings.eval)
table.insert(0, "model", params.model["name"])
write_parquet(table, snakemake.output.eval)
drift = drift_table(adapter, tuned, windows, settings.eval)
drift.insert(0, "model", params.model["name"])
write_parquet(drift, snakemake.output.drift)
kl = table[(table.metric == "kl") & (table.unit == "nats_per_token")]
print(kl.pivot(index="layer", columns="lens", values="value").round(4))
