"""Rule eval_jacobian_lens: logit vs tuned vs J-lens on held-out text (F18, findings)."""

from pathlib import Path

from lenslab.gate import load_model
from lenslab.io import write_parquet
from lenslab.joblog import start_log
from lenslab.lenses.jacobian_config import parse_jacobian_settings
from lenslab.lenses.jacobian_eval import compare_lenses
from lenslab.lenses.registry import build_lens
from lenslab.lenses.tuned_config import load_documents, make_windows
from lenslab.runtime import setup

start_log(snakemake)  # everything this job prints goes to its rule's log

params = snakemake.params
settings = parse_jacobian_settings(params.jacobian)
setup(seed=settings.eval.seed)
adapter = load_model(params.model, params.model_path)
lenses = {
    "logit": build_lens("logit", adapter),
    "tuned": build_lens("tuned", adapter, Path(snakemake.input.tuned).parent),
    "jacobian": build_lens("jacobian", adapter, Path(snakemake.input.lens).parent),
}
docs = load_documents(settings.text, params.model, "eval", params.model_path)
windows = make_windows(adapter.tokenizer, docs, settings.fit.seq_len)
table = compare_lenses(adapter, lenses, windows, settings.eval)
table.insert(0, "model", params.model["name"])
write_parquet(table, snakemake.output.eval)
for metric in ("kl", "top1"):
    print(
        table[table.metric == metric].pivot(index="layer", columns="lens", values="value").round(4)
    )
