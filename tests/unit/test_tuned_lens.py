"""Tuned lens: identity at init, file format and interop, mismatch errors, training, evaluation."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from lenslab.errors import LensLabError
from lenslab.lenses.logit import LogitLens
from lenslab.lenses.tuned import TunedLens, unembed_hash
from lenslab.lenses.tuned_config import (
    EvalSettings,
    TextSettings,
    TrainSettings,
    load_documents,
    make_windows,
    parse_settings,
)
from lenslab.lenses.tuned_eval import (
    bootstrap_ratio,
    drift_table,
    evaluate_lenses,
    linear_cka,
    mean_cosine,
)
from lenslab.lenses.tuned_train import layer_kl_backward, teacher, train_tuned_lens
from lenslab.models.adapter import ModelAdapter
from lenslab.models.tiny import build_tiny, tiny_tokenizer

FAST = EvalSettings(max_windows=64, micro_batch=16, bootstrap=200, drift_windows=8)


def _peaky_gpt2(seed: int = 0, **overrides) -> ModelAdapter:
    """A tiny GPT-2 with large weights: its layers disagree, so KLs are far from zero."""
    model = build_tiny("gpt2", seed=seed, initializer_range=0.3, **overrides)
    return ModelAdapter(model, tiny_tokenizer(), name="tiny-gpt2")


def _windows(n: int, t: int = 16, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(4, 84, (n, t), generator=gen)


def _randomise(lens: TunedLens, seed: int = 0) -> TunedLens:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lens.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return lens


@pytest.fixture
def peaky() -> ModelAdapter:
    return _peaky_gpt2()


# -- identity at initialisation --------------------------------------------------------------
def test_untrained_tuned_lens_is_exactly_the_logit_lens(tiny_adapter):
    tuned, logit = TunedLens(tiny_adapter), LogitLens(tiny_adapter)
    _, resid = tiny_adapter.run_with_resid(_windows(2, 7))
    for layer in range(tiny_adapter.n_layers + 1):
        assert torch.equal(tuned.logits(resid[layer], layer), logit.logits(resid[layer], layer))
    assert len(tuned.layer_translators) == tiny_adapter.n_layers  # none for the last state


def test_untrained_statistics_equal_the_logit_lens(peaky):
    windows = _windows(8)
    table = evaluate_lenses(
        peaky, {"logit": LogitLens(peaky), "tuned": TunedLens(peaky)}, windows, FAST
    )
    cols = ["layer", "metric", "unit", "value", "ci_low", "ci_high"]
    a = table[table.lens == "logit"][cols].reset_index(drop=True)
    b = table[table.lens == "tuned"][cols].reset_index(drop=True)
    assert len(a) == (peaky.n_layers + 1) * 3 * 2
    assert a.equals(b)


def test_transform_is_residual_affine_and_identity_at_the_last_layer(peaky):
    lens = _randomise(TunedLens(peaky))
    h = torch.randn(5, peaky.d_model)
    t = lens.layer_translators[1]
    torch.testing.assert_close(lens.transform(h, 1), h + h @ t.weight.T + t.bias)
    assert torch.equal(lens.transform(h, peaky.n_layers), h)
    assert torch.equal(lens.transform(h, -1), h)
    with pytest.raises(LensLabError, match="out of range"):
        lens.transform(h, peaky.n_layers + 1)


# -- files -----------------------------------------------------------------------------------
def test_save_load_round_trip_is_identical_and_byte_stable(tmp_path, peaky):
    lens = _randomise(TunedLens(peaky))
    lens.save(tmp_path / "a")
    lens.save(tmp_path / "b")
    assert (tmp_path / "a/params.pt").read_bytes() == (tmp_path / "b/params.pt").read_bytes()
    back = TunedLens.load(tmp_path / "a", peaky)
    h = torch.randn(3, 4, peaky.d_model)
    for layer in range(peaky.n_layers + 1):
        assert torch.equal(back.logits(h, layer), lens.logits(h, layer))
    config = json.loads((tmp_path / "a/config.json").read_text())
    assert config["d_model"] == 32 and config["num_hidden_layers"] == 3 and config["bias"]
    assert config["lens_type"] == "linear_tuned_lens"
    assert config["unembed_hash"] == unembed_hash(peaky)
    state = torch.load(tmp_path / "a/params.pt", weights_only=True)
    assert sorted(state) == sorted(f"{i}.{p}" for i in range(3) for p in ("weight", "bias"))


def test_hand_written_file_in_the_documented_format(tmp_path, peaky):
    """A whole-lens state dict (prefixed keys, unembed entries) and a config without extras."""
    gen = torch.Generator().manual_seed(3)
    d, n = peaky.d_model, peaky.n_layers
    state = {}
    for i in range(n):
        state[f"layer_translators.{i}.weight"] = 0.1 * torch.randn(d, d, generator=gen)
        state[f"layer_translators.{i}.bias"] = torch.randn(d, generator=gen)
    state["unembed.unembedding.weight"] = torch.zeros(1)
    torch.save({k: v.half() for k, v in state.items()}, tmp_path / "params.pt")
    config = {"base_model_name_or_path": "x", "d_model": d, "num_hidden_layers": n, "bias": True,
              "base_model_revision": None, "unembed_hash": unembed_hash(peaky),
              "lens_type": "linear_tuned_lens"}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    lens = TunedLens.load(tmp_path, peaky)
    h = torch.randn(6, d)
    w, b = state["layer_translators.2.weight"].half().float(), state["layer_translators.2.bias"]
    expected = peaky.decode(h + h @ w.T + b.half().float())
    torch.testing.assert_close(lens.logits(h, 2), expected)


def test_package_interop_both_ways(tmp_path, peaky):
    tl = pytest.importorskip("tuned_lens.nn")
    theirs = tl.TunedLens.from_model(peaky.model)
    with torch.no_grad():
        for p in theirs.layer_translators.parameters():
            p.normal_(0, 0.1)
    assert theirs.config.unembed_hash == unembed_hash(peaky)
    theirs.save(tmp_path / "theirs")
    ours = TunedLens.load(tmp_path / "theirs", peaky)
    h = torch.randn(5, peaky.d_model)
    for layer in range(peaky.n_layers):
        torch.testing.assert_close(ours.logits(h, layer), theirs(h, idx=layer))
    ours.save(tmp_path / "ours")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = tl.TunedLens.from_model_and_pretrained(peaky.model, str(tmp_path / "ours"))
    for layer in range(peaky.n_layers):
        torch.testing.assert_close(again(h, idx=layer), ours.logits(h, layer))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [({"n_layer": 4}, "num_hidden_layers=3"), ({"n_embd": 16}, "d_model=32"),
     ({"vocab_size": 90}, "vocab_size=96")],
)  # fmt: skip
def test_lens_for_another_shape_is_a_clear_error(tmp_path, peaky, overrides, match):
    TunedLens(peaky).save(tmp_path)
    other = _peaky_gpt2(**overrides)
    with pytest.raises(LensLabError, match=match):
        TunedLens.load(tmp_path, other)


def test_lens_for_another_unembedding_is_an_error_or_a_warning(tmp_path, peaky):
    TunedLens(peaky).save(tmp_path)
    other = _peaky_gpt2(seed=1)
    with pytest.raises(LensLabError, match="different unembedding"):
        TunedLens.load(tmp_path, other)
    with pytest.warns(UserWarning, match="different unembedding"):
        TunedLens.load(tmp_path, other, strict=False)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["unembed_hash"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="no unembed_hash"):
        TunedLens.load(tmp_path, other)


def test_missing_or_damaged_files_are_clear_errors(tmp_path, peaky):
    with pytest.raises(LensLabError, match="no tuned lens"):
        TunedLens.load(tmp_path, peaky)
    TunedLens(peaky).save(tmp_path)
    (tmp_path / "params.pt").write_bytes(b"not a zip")
    with pytest.raises(LensLabError, match="cannot read"):
        TunedLens.load(tmp_path, peaky)
    torch.save({"0.weight": torch.zeros(32, 32)}, tmp_path / "params.pt")
    with pytest.raises(LensLabError, match="missing"):
        TunedLens.load(tmp_path, peaky)


# -- training --------------------------------------------------------------------------------
def test_fused_kl_gradient_equals_autograd_of_kl_div(peaky):
    lens = _randomise(TunedLens(peaky))
    logits, resid = peaky.run_with_resid(_windows(3))
    p, neg_entropy = teacher(logits)
    n = p.shape[0]
    total = layer_kl_backward(lens, resid[1], 1, p, neg_entropy, 1.0 / n)
    fused = [q.grad.clone() for q in lens.layer_translators[1].parameters()]
    lens.zero_grad()
    logq = torch.log_softmax(lens.logits(resid[1], 1).flatten(0, 1), -1)
    logp = torch.log_softmax(logits.flatten(0, 1), -1)
    ref = torch.nn.functional.kl_div(logq, logp, log_target=True, reduction="sum")
    (ref / n).backward()
    torch.testing.assert_close(total, ref.detach(), rtol=1e-4, atol=1e-4)
    for a, b in zip(fused, lens.layer_translators[1].parameters(), strict=True):
        torch.testing.assert_close(a, b.grad, rtol=1e-4, atol=1e-6)


def test_training_reduces_kl_on_held_out_windows(peaky):
    settings = TrainSettings(steps=25, tokens_per_step=256, seq_len=16, micro_batch=16)
    lens, history = train_tuned_lens(peaky, _windows(48), settings, progress=False)
    assert sorted(history.columns) == ["kl_nats", "layer", "lr", "step"]
    assert len(history) == 25 * peaky.n_layers
    held_out = _windows(16, seed=99)
    table = evaluate_lenses(peaky, {"logit": LogitLens(peaky), "tuned": lens}, held_out, FAST)
    kl = table[(table.metric == "kl") & (table.unit == "nats_per_token")]
    kl = kl.pivot(index="layer", columns="lens", values="value")
    last = peaky.n_layers
    assert (kl.tuned[:last] < 0.8 * kl.logit[:last]).all(), kl
    assert kl.tuned[last] == kl.logit[last] == 0.0


def test_resumed_training_equals_an_uninterrupted_run(tmp_path, peaky):
    settings = TrainSettings(steps=6, tokens_per_step=64, seq_len=16, micro_batch=4,
                             checkpoint_every=2)  # fmt: skip
    windows = _windows(10)  # 4 windows per step: epochs wrap inside steps
    full, full_hist = train_tuned_lens(peaky, windows, settings, progress=False)

    def stop(step, _kl):
        if step == 2:
            raise KeyboardInterrupt

    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):
        train_tuned_lens(peaky, windows, settings, checkpoint=ckpt, callback=stop)
    assert ckpt.is_file()
    seen = []
    resumed, hist = train_tuned_lens(
        peaky, windows, settings, checkpoint=ckpt, progress=False,
        callback=lambda step, _kl: seen.append(step),
    )  # fmt: skip
    assert seen == [2, 3, 4, 5]  # steps 0-1 came from the checkpoint
    assert not ckpt.exists()
    assert full_hist.equals(hist)
    for a, b in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_checkpoint_of_other_settings_is_not_resumed(tmp_path, peaky):
    windows = _windows(8)
    settings = TrainSettings(steps=4, tokens_per_step=64, seq_len=16, checkpoint_every=1)
    ckpt = tmp_path / "checkpoint.pt"

    def stop(step, _kl):
        if step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_tuned_lens(peaky, windows, settings, checkpoint=ckpt, callback=stop, progress=False)
    seen = []
    other = TrainSettings(steps=4, tokens_per_step=64, seq_len=16, lr_scale=0.5)
    train_tuned_lens(peaky, windows, other, checkpoint=ckpt, progress=False,
                     callback=lambda step, _kl: seen.append(step))  # fmt: skip
    assert seen == [0, 1, 2, 3]


# -- settings and text -----------------------------------------------------------------------
def test_settings_reject_unknown_keys_and_bad_values():
    assert parse_settings({}).train.momentum == 0.9
    assert parse_settings({"train": {"steps": 3}}).train.steps == 3
    with pytest.raises(LensLabError, match=r"unknown tuned_lens.train setting.*'stpes'"):
        parse_settings({"train": {"stpes": 3}})
    with pytest.raises(LensLabError, match="is not a int"):
        parse_settings({"train": {"steps": 2.5}})
    with pytest.raises(LensLabError, match="text.source"):
        parse_settings({"text": {"source": "web"}})


def test_documents_from_files_split_without_overlap(tmp_path):
    (tmp_path / "a.txt").write_text("\n".join(f"w{i} w{i + 1}" for i in range(10)) + "\n\n")
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"t": f"w{i}"}) for i in range(5)))
    (tmp_path / "p.yaml").write_text(
        "name: p\nprompts:\n- {id: a, text: w1 w2}\n- {id: b, text: w3}\n"
    )
    model = {"name": "m", "source": "x"}
    text = TextSettings(path=str(tmp_path / "a.txt"), eval_fraction=0.2)
    train, held = load_documents(text, model, "train"), load_documents(text, model, "eval")
    assert len(train) == 8 and len(held) == 2 and not set(train) & set(held)
    jsonl = TextSettings(path=str(tmp_path / "a.jsonl"), field="t", eval_fraction=0.4)
    assert load_documents(jsonl, model, "eval") == ["w3", "w4"]
    prompts = TextSettings(path=str(tmp_path / "p.yaml"), eval_fraction=0.5)
    assert load_documents(prompts, model, "train") == ["w1 w2"]
    with pytest.raises(LensLabError, match="needs text"):
        load_documents(TextSettings(), model, "train")
    with pytest.raises(LensLabError, match="no field 'text'"):
        load_documents(TextSettings(path=str(tmp_path / "a.jsonl")), model, "train")


def test_windows_join_documents_with_eos():
    tok = tiny_tokenizer()
    windows = make_windows(tok, ["w1 w2", "w3", "w4 w5 w6"], seq_len=4)
    eos = tok.eos_token_id
    # w1 w2 EOS w3 EOS w4 w5 w6 EOS: two windows, the tail (EOS) is dropped
    assert windows.tolist() == [[5, 6, eos, 7], [eos, 8, 9, 10]]
    with pytest.raises(LensLabError, match="fewer than one window"):
        make_windows(tok, ["w1"], seq_len=4)


# -- evaluation ------------------------------------------------------------------------------
def test_bootstrap_ratio_known_answers():
    num = np.array([[1.0, 4.0], [3.0, 4.0], [2.0, 4.0]])
    den = np.array([1.0, 1.0, 2.0])
    value, low, high = bootstrap_ratio(num, den, n_boot=500, ci=0.9, seed=0)
    np.testing.assert_allclose(value, [1.5, 3.0])
    assert low[0] < 1.5 < high[0]
    assert low[1] <= 3.0 <= high[1] and high[1] - low[1] > 0  # 4/1, 4/2 vary across windows
    same = bootstrap_ratio(np.ones((4, 1)), np.full(4, 2.0), n_boot=100, ci=0.9, seed=0)
    assert same[1][0] == same[2][0] == 0.5


def test_per_byte_units_follow_from_per_token_ones(peaky):
    windows = _windows(6)
    table = evaluate_lenses(peaky, {"logit": LogitLens(peaky)}, windows, FAST)
    tok = table[table.unit == "nats_per_token"].value.to_numpy()
    bpb = table[table.unit == "bits_per_byte"].value.to_numpy()
    n_tokens, n_bytes = table.n_tokens.iloc[0], table.n_bytes.iloc[0]
    assert n_tokens == 6 * 15
    # word-level tokens "w12": decoded text "w5 w12 ..." = bytes of the words plus spaces
    text = [peaky.tokenizer.decode(w) for w in windows[:, 1:].tolist()]
    assert n_bytes == sum(len(t.encode()) for t in text)
    np.testing.assert_allclose(bpb, tok * n_tokens / n_bytes / math.log(2), rtol=1e-9)
    final = table[(table.layer == 3) & (table.metric == "kl")].value
    assert (final == 0).all()  # the last layer's lens is the model's output


def test_model_cross_entropy_is_brute_force_next_token_loss(peaky):
    windows = _windows(4)
    table = evaluate_lenses(peaky, {"logit": LogitLens(peaky)}, windows, FAST)
    ce = table[(table.layer == 3) & (table.metric == "ce") & (table.unit == "nats_per_token")]
    with torch.no_grad():
        logits = peaky.forward(windows)
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), windows[:, 1:].flatten())
    assert ce.value.iloc[0] == pytest.approx(float(ref), rel=1e-5)


def test_linear_cka_and_cosine_known_answers():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=gen)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=gen))
    states = torch.stack([x, 3.0 * x @ q + 1.0, torch.randn(200, 8, generator=gen)])
    cka = linear_cka(states)
    torch.testing.assert_close(cka.diagonal(), torch.ones(3, dtype=torch.float64))
    assert cka[0, 1] == pytest.approx(1.0, abs=1e-9)  # invariant to rotation, scale, shift
    assert cka[0, 2] < 0.2
    assert torch.equal(cka, cka.T)  # exact by construction (one division by di * dj)
    cos = mean_cosine(torch.stack([x, 2 * x + 5, -x]))
    assert cos[0, 1] == pytest.approx(1.0) and cos[0, 2] == pytest.approx(-1.0)


def test_transfer_matrix_diagonal_is_the_tuned_lens_and_last_row_the_logit_lens(peaky):
    lens = _randomise(TunedLens(peaky))
    windows = _windows(4)
    drift = drift_table(peaky, lens, windows, FAST)
    mat = drift[drift.kind == "transfer_kl"].pivot(index="row", columns="col", values="value")
    # brute force, positions 1..T-1 as in drift_table
    logits, resid = peaky.run_with_resid(windows)
    logp = torch.log_softmax(logits[:, 1:], -1)

    @torch.no_grad()
    def kl(lens_, layer):
        logq = torch.log_softmax(lens_.logits(resid[layer][:, 1:], layer), -1)
        return float((logp.exp() * (logp - logq)).sum(-1).mean())

    n = peaky.n_layers
    for j in range(n + 1):
        assert mat.loc[j, j] == pytest.approx(kl(lens, j), rel=1e-4, abs=1e-6)
        assert mat.loc[n, j] == pytest.approx(kl(LogitLens(peaky), j), rel=1e-4, abs=1e-6)
    assert drift.n_tokens.iloc[0] == 4 * 15


# -- the embedded model ----------------------------------------------------------------------
@pytest.mark.slow
def test_tuned_lens_beats_logit_lens_on_the_embedded_model(request):
    try:
        model_dir = request.getfixturevalue("embedded_test_dir")
    except (pytest.FixtureLookupError, FileNotFoundError) as err:  # no fixture / no config yet
        pytest.skip(f"embedded test model unavailable: {err}")
    if not (model_dir / "config.json").is_file():
        pytest.skip("embedded test model not built")
    from lenslab.gate import load_model

    adapter = load_model({"name": "embedded-test", "source": "embedded"}, path=model_dir)
    model_cfg = {"name": "embedded-test", "source": "embedded"}
    text = TextSettings(lines=1000)
    seq_len = min(64, adapter.model.config.n_positions)
    train = make_windows(adapter.tokenizer, load_documents(text, model_cfg, "train", model_dir),
                         seq_len)  # fmt: skip
    held = make_windows(adapter.tokenizer, load_documents(text, model_cfg, "eval", model_dir),
                        seq_len)  # fmt: skip
    settings = TrainSettings(steps=40, tokens_per_step=2048, seq_len=seq_len, micro_batch=32)
    lens, _ = train_tuned_lens(adapter, train, settings, progress=False)
    table = evaluate_lenses(adapter, {"logit": LogitLens(adapter), "tuned": lens}, held,
                            EvalSettings(max_windows=64, bootstrap=200))  # fmt: skip
    kl = table[(table.metric == "kl") & (table.unit == "nats_per_token")]
    kl = kl.pivot(index="layer", columns="lens", values="value")
    last = adapter.n_layers
    assert (kl.tuned[:last] < kl.logit[:last]).all(), kl
    ce = table[(table.metric == "ce") & (table.unit == "bits_per_byte")]
    ce = ce.pivot(index="layer", columns="lens", values="value")
    assert (ce.tuned[:last] < ce.logit[:last]).all(), ce


# -- figures ---------------------------------------------------------------------------------
def test_figures_are_written_with_their_conventions(tmp_path, peaky):
    from lenslab.figures.save import save_figure
    from lenslab.figures.tuned_lens import (
        f7_caption,
        f7_options,
        f8_caption,
        plot_f7,
        plot_f8,
        trajectory,
    )

    lens = _randomise(TunedLens(peaky))
    windows = _windows(4)
    metrics = evaluate_lenses(peaky, {"logit": LogitLens(peaky), "tuned": lens}, windows, FAST)
    _, resid = peaky.run_with_resid(windows[:1])
    layers = list(range(peaky.n_layers + 1))
    traj = trajectory(lens, resid[:, 0], peaky.tokenizer, layers)
    assert traj.prob.shape == (4, 16) and ((traj.prob > 0) & (traj.prob <= 1)).all()
    logq = torch.log_softmax(lens.logits(resid[1, 0, 5], 1), -1)
    assert traj.top1[1][5] == peaky.tokenizer.decode([int(logq.argmax())])
    opts = f7_options({"prompt": "a"})
    fig = plot_f7(trajectory(LogitLens(peaky), resid[:, 0], peaky.tokenizer, layers), traj,
                  [f"t{i}" for i in range(16)], metrics, opts["colour"], opts["unit"])  # fmt: skip
    caption = f7_caption(True, "w1 w2", opts["colour"], opts["unit"], metrics)
    save_figure(fig, tmp_path / "F7_tiny_x.png", "F7", caption)
    assert "trained to match the model's final output" in caption and "95%" in caption
    drift = drift_table(peaky, lens, windows, FAST)
    save_figure(plot_f8(drift), tmp_path / "F8_tiny_x.png", "F8", f8_caption(drift))
    for name in ("F7_tiny_x", "F8_tiny_x"):
        for ext in ("png", "svg", "json"):
            assert (tmp_path / f"{name}.{ext}").stat().st_size > 0
    with pytest.raises(
        LensLabError, match=r"unknown figure option\(s\) \[.colour_by.\] for F7Options"
    ):
        f7_options({"colour_by": "prob"})


def test_cached_states_train_the_same_lens_as_recomputed_ones(peaky):
    windows = _windows(12)  # 3 epochs: the cache is used
    settings = TrainSettings(steps=6, tokens_per_step=96, seq_len=16, micro_batch=4)
    cached, _ = train_tuned_lens(peaky, windows, settings, progress=False)
    fresh, _ = train_tuned_lens(peaky, windows, replace(settings, cache_mb=0), progress=False)
    for a, b in zip(cached.parameters(), fresh.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert any(p.abs().sum() > 0 for p in cached.parameters())


def test_f8_labels_stay_legible_at_31_layers() -> None:
    """A 31-state drift matrix prints at most 16 labels per axis, the last one included."""
    import pandas as pd

    from lenslab.figures.tuned_lens import plot_f8

    rows = [(k, i, j, 0.5 + 0.01 * (i == j)) for k in ("cosine", "cka", "transfer_kl")
            for i in range(31) for j in range(31)]  # fmt: skip
    drift = pd.DataFrame(rows, columns=["kind", "row", "col", "value"]).assign(n_tokens=10)
    fig = plot_f8(drift)
    for ax in fig.axes[:3]:  # the three panels (then their colour bars)
        xs = [t.get_text() for t in ax.get_xticklabels()]
        ys = [t.get_text() for t in ax.get_yticklabels()]
        assert len(xs) <= 16 and xs[-1] == "30" and len(ys) <= 16
    assert fig.axes[2].get_yticklabels()[-1].get_text() == "id"
