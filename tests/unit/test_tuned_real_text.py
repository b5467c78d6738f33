"""The tuned lens on real models: the least-squares start (known answers, an independent solver,
its use in training) and text from a pinned wheel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lenslab.errors import LensLabError
from lenslab.lenses.logit import LogitLens
from lenslab.lenses.tuned_config import EvalSettings, TrainSettings, parse_settings
from lenslab.lenses.tuned_eval import evaluate_lenses
from lenslab.lenses.tuned_init import Moments, least_squares_maps, unit_rms
from lenslab.lenses.tuned_train import train_tuned_lens
from lenslab.models.adapter import ModelAdapter
from lenslab.models.tiny import build_tiny, tiny_tokenizer

FAST = EvalSettings(max_windows=64, micro_batch=16, bootstrap=200, drift_windows=8)


def _peaky(seed: int = 0) -> ModelAdapter:
    model = build_tiny("gpt2", seed=seed, initializer_range=0.3)
    return ModelAdapter(model, tiny_tokenizer(), name="tiny-gpt2")


def _windows(n: int, t: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(4, 84, (n, t), generator=torch.Generator().manual_seed(seed))


def test_moments_recover_an_exact_linear_map():
    gen = torch.Generator().manual_seed(0)
    truth = torch.randn(2, 8, 8, generator=gen, dtype=torch.float64)
    moments = Moments(2, 8)
    for _ in range(3):  # sums over chunks
        x = torch.randn(50, 8, generator=gen, dtype=torch.float64)
        for layer in range(2):
            moments.add(layer, x, x @ truth[layer].T)
    maps = moments.solve(ridge=0.0)
    torch.testing.assert_close(maps, truth, rtol=1e-4, atol=1e-4)  # float32 products


def test_unit_rms_rows_have_rms_one_and_zero_rows_stay_zero():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0], [-1e4, 1e4]])
    out = unit_rms(x)
    assert torch.allclose(out[0].pow(2).mean().sqrt(), torch.tensor(1.0))
    assert torch.equal(out[1], torch.zeros(2))
    assert torch.allclose(out[2], torch.tensor([-1.0, 1.0]))


def test_fit_on_a_model_equals_numpy_least_squares():
    """An independent computation: numpy's lstsq on the same normalised states."""
    adapter, windows = _peaky(), _windows(12)
    maps = least_squares_maps(adapter, windows, micro_batch=5, ridge=0.0, progress=False)
    with torch.no_grad():
        _, resid = adapter.run_with_resid(windows)
    states = resid[:, :, 1:].flatten(1, 2).double()
    y = unit_rms(states[-1]).numpy()
    for layer in (0, adapter.n_layers - 1):
        x = unit_rms(states[layer]).numpy()
        a_t, *_ = np.linalg.lstsq(x, y, rcond=None)
        np.testing.assert_allclose(maps[layer].numpy(), a_t.T, atol=2e-3)


def test_least_squares_start_beats_the_logit_lens_and_steps_may_be_zero():
    adapter = _peaky()
    settings = TrainSettings(steps=0, seq_len=16, micro_batch=16, init="least_squares")
    lens, history = train_tuned_lens(adapter, _windows(64), settings, progress=False)
    assert history.empty
    held_out = _windows(16, seed=99)
    lenses = {"logit": LogitLens(adapter), "tuned": lens}
    table = evaluate_lenses(adapter, lenses, held_out, FAST)
    kl = table[(table.metric == "kl") & (table.unit == "nats_per_token")]
    kl = kl.pivot(index="layer", columns="lens", values="value")
    last = adapter.n_layers
    assert (kl.tuned[:last] < 0.8 * kl.logit[:last]).all(), kl
    assert kl.tuned[last] == kl.logit[last] == 0.0


def test_lens_maps_states_through_the_fitted_map():
    adapter = _peaky()
    windows = _windows(8)
    settings = TrainSettings(steps=0, seq_len=16, micro_batch=8, init="least_squares")
    lens, _ = train_tuned_lens(adapter, windows, settings, progress=False)
    maps = least_squares_maps(adapter, windows, micro_batch=8, progress=False)
    h = torch.randn(3, adapter.d_model)
    torch.testing.assert_close(lens.transform(h, 1), h @ maps[1].float().T, rtol=1e-4, atol=1e-4)


def test_settings_of_the_start():
    assert parse_settings({}).train.init == "identity"
    s = parse_settings({"train": {"init": "least_squares", "steps": 0}})
    assert s.train.steps == 0
    with pytest.raises(LensLabError, match="train.init in"):
        parse_settings({"train": {"init": "zeros"}})
    with pytest.raises(LensLabError, match="steps >= 1"):
        parse_settings({"train": {"steps": 0}})
    with pytest.raises(LensLabError, match="init_skip"):
        least_squares_maps(_peaky(), _windows(2, t=1), micro_batch=2, progress=False)


# -- text from a pinned wheel ------------------------------------------------------------------
def _wheel(tmp_path, files: dict[str, str]):
    import zipfile

    path = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


class _Words:
    """A tokenizer whose tokens are whitespace-separated words."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(range(len(text.split())))}


def test_wheel_documents_are_whole_files_in_a_seeded_order_up_to_the_token_count(tmp_path):
    from lenslab.corpus import wheel_documents

    files = {f"pkg/m{i}.py": " ".join(["w"] * (i + 1)) for i in range(8)}
    files |= {"pkg/data.txt": "not python", "pkg/empty.py": "  \n"}
    wheel = _wheel(tmp_path, files)
    everything = wheel_documents(wheel, "pkg/*.py", _Words(), n_tokens=36)
    assert sorted(everything, key=len) == [files[f"pkg/m{i}.py"] for i in range(8)]  # 36 words
    first = wheel_documents(wheel, "pkg/*.py", _Words(), n_tokens=10, seed=0)
    assert sum(len(d.split()) for d in first) >= 10
    assert first == wheel_documents(wheel, "pkg/*.py", _Words(), n_tokens=10, seed=0)
    orders = {tuple(wheel_documents(wheel, "pkg/*.py", _Words(), 36, seed=s)) for s in range(4)}
    assert len(orders) > 1  # the seed shuffles the files
    with pytest.raises(LensLabError, match="fewer than the 37 asked for"):
        wheel_documents(wheel, "pkg/*.py", _Words(), n_tokens=37)


def test_wheel_text_needs_its_pin():
    with pytest.raises(LensLabError, match="text.sha256"):
        parse_settings({"text": {"source": "wheel", "distribution": "nltk", "version": "3.9.1"}})
    pinned = {"source": "wheel", "distribution": "nltk", "version": "3.9.1", "sha256": "ab"}
    assert parse_settings({"text": pinned}).text.members == "*.py"


def test_fetch_wheel_checks_the_pin(tmp_path):
    from lenslab.wheels import fetch_wheel, sha256_of

    cache = tmp_path / "cache"
    cache.mkdir()
    wheel = _wheel(cache, {"demo/a.py": "x = 1"})
    assert fetch_wheel("demo", "1.0", sha256_of(wheel), cache, offline=True) == wheel
    with pytest.raises(LensLabError, match="truncated, tampered"):
        fetch_wheel("demo", "1.0", "0" * 64, cache, offline=True)
    with pytest.raises(LensLabError, match="is not in"):
        fetch_wheel("demo", "2.0", None, cache, offline=True)


def test_bfloat16_statistics_give_nearly_the_float32_fit():
    adapter, windows = _peaky(), _windows(24)
    exact = least_squares_maps(adapter, windows, micro_batch=8, progress=False)
    fast = least_squares_maps(adapter, windows, 8, progress=False, dtype=torch.bfloat16)
    assert not torch.equal(exact, fast)  # the autocast did run
    assert (fast - exact).norm() < 0.1 * exact.norm()
    with pytest.raises(LensLabError, match="init_dtype"):
        parse_settings({"train": {"init_dtype": "float16"}})


def test_drift_windows_zero_computes_no_drift_and_refuses_f8():
    """``drift_windows: 0`` skips the drift matrices; a study that draws F8 is then refused
    before any job runs, and a negative count is refused by the settings."""
    from lenslab.config import load_config
    from lenslab.lenses.tuned import TunedLens
    from lenslab.lenses.tuned_eval import drift_table
    from lenslab.validate import validate_study

    adapter = _peaky()
    table = drift_table(adapter, TunedLens(adapter), _windows(2), EvalSettings(drift_windows=0))
    assert table.empty and list(table.columns) == ["kind", "row", "col", "value", "n_tokens"]
    assert not drift_table(
        adapter, TunedLens(adapter), _windows(2), EvalSettings(drift_windows=1)
    ).empty
    assert parse_settings({"eval": {"drift_windows": 0}}).eval.drift_windows == 0
    with pytest.raises(LensLabError, match="drift_windows >= 0"):
        parse_settings({"eval": {"drift_windows": -1}})
    cfg = load_config("default", ["tuned_lens.eval.drift_windows=0"])
    assert "F8" in cfg.study.figures
    with pytest.raises(LensLabError, match="drift_windows is 0") as err:
        validate_study(cfg, {"embedded": None})
    assert "take F8 out of the study" in err.value.fix
