"""Rule figure_F18: the J-lens readout of one prompt and the held-out lens comparison."""

from pathlib import Path

from lenslab.errors import LensLabError
from lenslab.extract import load_activations
from lenslab.figures.interactive import trajectory_view
from lenslab.figures.jacobian_lens import f18_caption, plot_f18
from lenslab.figures.save import save_figure
from lenslab.figures.tuned_lens import shown_layers, token_text, trajectory
from lenslab.io import read_parquet
from lenslab.joblog import start_log
from lenslab.lenses.registry import build_lens
from lenslab.models import load_model
from lenslab.options import JacobianOptions, parse_options
from lenslab.runtime import setup

start_log(snakemake)  # everything this job prints goes to its rule's log

setup(1)
params, out = snakemake.params, snakemake.output
opts = parse_options(JacobianOptions, params.options)
adapter = load_model(params.model, params.model_path)
lenses = {
    "logit": build_lens("logit", adapter),
    "tuned": build_lens("tuned", adapter, Path(snakemake.input.tuned).parent),
    "jacobian": build_lens("jacobian", adapter, Path(snakemake.input.lens).parent),
}
acts = load_activations(snakemake.input.acts)
prompt = opts.prompt or acts.prompt_ids[0]
if prompt not in acts.prompt_ids:
    raise LensLabError(
        f"F18 option prompt={prompt!r} is not in the prompt set",
        fix=f"use one of {acts.prompt_ids}",
    )
k = acts.prompt_ids.index(prompt)
resid = acts.resid[k].to(adapter.device, adapter.unembed.weight.dtype)
ids = acts.input_ids[k].tolist()
tokens = [token_text(adapter.tokenizer, i) for i in ids]
layers = shown_layers(adapter.n_layers, int(opts.max_rows))
trajs = {name: trajectory(lens, resid, adapter.tokenizer, layers) for name, lens in lenses.items()}
table = read_parquet(snakemake.input.eval)
fig = plot_f18(trajs["jacobian"], tokens, table, opts.colour)
caption = f18_caption(
    adapter.tokenizer.decode(ids), opts.colour, table, lenses["jacobian"].description
)
views = [
    trajectory_view(t, tokens, f"{name} lens: top-1 per cell, top-5 on hover", opts.colour)
    for name, t in trajs.items()
]
save_figure(
    fig, out.png, f"Jacobian lens vs logit and tuned lens, prompt {prompt}", caption,
    data=[snakemake.input.eval], interactive={"views": views},
)  # fmt: skip
