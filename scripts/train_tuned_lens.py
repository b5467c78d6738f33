"""Rule train_tuned_lens: fit a tuned lens to one model on held-out text."""

from dataclasses import asdict
from pathlib import Path

from lenslab.gate import load_model
from lenslab.io import write_parquet
from lenslab.joblog import start_log
from lenslab.lenses.tuned_config import check_seq_len, load_documents, make_windows, parse_settings
from lenslab.lenses.tuned_train import train_tuned_lens
from lenslab.runtime import setup

start_log(snakemake)  # everything this job prints goes to its rule's log

params = snakemake.params
settings = parse_settings(params.tuned)
setup(seed=settings.train.seed)
adapter = load_model(params.model, params.model_path)
check_seq_len(adapter.model, settings.train.seq_len)
docs = load_documents(settings.text, params.model, "train", params.model_path)
windows = make_windows(adapter.tokenizer, docs, settings.train.seq_len)
out = Path(snakemake.output.params).parent
lens, history = train_tuned_lens(adapter, windows, settings.train, checkpoint=out / "checkpoint.pt")
lens.info.update(text=asdict(settings.text), revision=params.model.get("revision"))
lens.save(out)
write_parquet(history, snakemake.output.metrics)
last = history[history.step == history.step.max()]
print("final KL per layer (nats):", last.kl_nats.round(4).tolist())
