"""Rule figure_F18: the J-lens readout of one prompt and the held-out lens comparison.

Like F7, F18 decodes the prompt's states through the lenses (its hover shows top-k tokens), so
its job loads the model: the heavy imports live in :func:`main`, the module level stays light.
"""

from pathlib import Path

from lenslab.errors import LensLabError
from lenslab.figures.jacobian_lens import f18_caption, plot_f18
from lenslab.figures.save import save_figure
from lenslab.io import read_parquet
from lenslab.joblog import start_log
from lenslab.options import JacobianOptions, parse_options


def main(snakemake) -> None:
    from lenslab.extract import load_activations
    from lenslab.figures.interactive import trajectory_view
    from lenslab.figures.tuned_lens import shown_layers, token_text, trajectory
    from lenslab.gate import load_model
    from lenslab.lenses.registry import build_lens
    from lenslab.runtime import setup

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
    trajs = {n: trajectory(lens, resid, adapter.tokenizer, layers) for n, lens in lenses.items()}
    table = read_parquet(snakemake.input.eval)
    fig = plot_f18(trajs["jacobian"], tokens, table, opts.colour)
    text = adapter.tokenizer.decode(ids)
    caption = f18_caption(text, opts.colour, table, lenses["jacobian"].description)
    views = [
        trajectory_view(t, tokens, f"{name} lens: top-1 per cell, top-5 on hover", opts.colour)
        for name, t in trajs.items()
    ]
    save_figure(
        fig, out.png, f"Jacobian lens vs logit and tuned lens, prompt {prompt}", caption,
        data=[snakemake.input.eval], interactive={"views": views},
    )  # fmt: skip


start_log(snakemake)  # everything this job prints goes to its rule's log
main(snakemake)
