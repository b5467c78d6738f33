"""Rules figure_F7 (tuned vs logit lens) and figure_F8 (representational drift)."""

from pathlib import Path

from lenslab.figures.interactive import trajectory_view
from lenslab.figures.save import save_figure
from lenslab.figures.tuned_lens import (
    f7_caption,
    f7_options,
    f8_caption,
    plot_f7,
    plot_f8,
    shown_layers,
    token_text,
    trajectory,
)
from lenslab.io import read_parquet
from lenslab.joblog import start_log
from lenslab.runtime import setup

start_log(snakemake)  # everything this job prints goes to its rule's log

out = snakemake.output
drift_only = Path(out.png).name.startswith("F8_")  # F8 draws a table; F7 runs both lenses
setup(1, uses_torch=not drift_only)
if drift_only:
    drift = read_parquet(snakemake.input.drift)
    save_figure(
        plot_f8(drift), out.png, "representational drift across layers", f8_caption(drift),
        data=[snakemake.input.drift],
    )  # fmt: skip
else:
    from lenslab.errors import LensLabError
    from lenslab.extract import load_activations
    from lenslab.gate import load_model
    from lenslab.lenses.logit import LogitLens
    from lenslab.lenses.tuned import TunedLens

    params = snakemake.params
    opts = f7_options(params.options)
    adapter = load_model(params.model, params.model_path)
    tuned = TunedLens.load(Path(snakemake.input.params).parent, adapter)
    acts = load_activations(snakemake.input.acts)
    prompt = opts["prompt"] or acts.prompt_ids[0]
    if prompt not in acts.prompt_ids:
        raise LensLabError(
            f"F7 option prompt={prompt!r} is not in the prompt set",
            fix=f"use one of {acts.prompt_ids}",
        )
    k = acts.prompt_ids.index(prompt)
    resid = acts.resid[k].to(adapter.device, adapter.unembed.weight.dtype)
    ids = acts.input_ids[k].tolist()
    tokens = [token_text(adapter.tokenizer, i) for i in ids]
    layers = shown_layers(adapter.n_layers, int(opts["max_rows"]))
    logit_traj = trajectory(LogitLens(adapter), resid, adapter.tokenizer, layers)
    tuned_traj = trajectory(tuned, resid, adapter.tokenizer, layers)
    metrics = read_parquet(snakemake.input.eval)
    fig = plot_f7(logit_traj, tuned_traj, tokens, metrics, opts["colour"], opts["unit"])
    caption = f7_caption(
        tuned.affine, adapter.tokenizer.decode(ids), opts["colour"], opts["unit"], metrics
    )
    views = [
        trajectory_view(t, tokens, f"{name} lens: top-1 per cell, top-5 on hover", opts["colour"])
        for name, t in (("logit", logit_traj), ("tuned", tuned_traj))
    ]
    save_figure(
        fig, out.png, f"tuned lens vs logit lens, prompt {prompt}", caption,
        data=[snakemake.input.eval], interactive={"views": views},
    )  # fmt: skip
