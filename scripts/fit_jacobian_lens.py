"""Rule fit_jacobian_lens: fit the J-lens of one model on held-out text (reference format)."""

from dataclasses import asdict
from pathlib import Path

from lenslab.gate import load_model
from lenslab.joblog import start_log
from lenslab.lenses.jacobian import FitSettings, fit_jacobian
from lenslab.lenses.jacobian_config import parse_jacobian_settings
from lenslab.lenses.tuned_config import check_seq_len, load_documents, make_windows
from lenslab.runtime import setup

start_log(snakemake)  # everything this job prints goes to its rule's log

params = snakemake.params
settings = parse_jacobian_settings(params.jacobian)
f = settings.fit
setup(threads=f.threads)
adapter = load_model(params.model, params.model_path)
check_seq_len(adapter.model, f.seq_len)
docs = load_documents(settings.text, params.model, "train", params.model_path)
windows = make_windows(adapter.tokenizer, docs, f.seq_len)[: f.n_prompts]
if len(windows) < f.n_prompts:
    print(f"the text gives {len(windows)} windows of {f.seq_len} tokens, fewer than {f.n_prompts}")
out = Path(snakemake.output.lens)
fit = fit_jacobian(
    adapter,
    windows.tolist(),
    FitSettings(f.skip_first, f.skip_last, f.dim_batch, f.fit_embeddings),
    checkpoint=out.with_name("checkpoint.pt"),
    checkpoint_every=f.checkpoint_every,
    metadata={"config_revision": params.model.get("revision"), "text": asdict(settings.text),
              "seq_len": f.seq_len},
)  # fmt: skip
fit.lens(adapter).save(out)
out.with_name("checkpoint.pt").unlink(missing_ok=True)
print(f"J-lens fitted on {fit.n_prompts} windows of {f.seq_len} tokens")
