"""The library's layers only point down: core -> models -> methods -> gate -> readouts ->
pipeline (docs/architecture.md). Every import counts, also one inside a function: a lazy import
that keeps torch out of a light job is fine, one that reaches up a layer is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from lenslab.codedeps import imported_modules, module_file

SRC = Path(__file__).resolve().parents[2] / "src"
# Longest prefix wins: lenslab.models.probe is models, lenslab.gate is gate.
LAYERS = {
    "core": ["lenslab", "lenslab.errors", "lenslab.io", "lenslab.config", "lenslab.options",
             "lenslab.wheels",
             "lenslab.lazy", "lenslab.runtime", "lenslab.joblog", "lenslab.skipped",
             "lenslab.devices"],
    "models": ["lenslab.models", "lenslab.embedded", "lenslab.prompts"],
    "methods": ["lenslab.lenses", "lenslab.stats", "lenslab.patching", "lenslab.attribution",
                "lenslab.patchscopes", "lenslab.difference", "lenslab.extract",
                "lenslab.iterative", "lenslab.visibility", "lenslab.lookahead",
                "lenslab.relations", "lenslab.corpus"],
    "gate": ["lenslab.gate"],
    "readouts": ["lenslab.figures", "lenslab.report", "lenslab.report_js", "lenslab.findings"],
    "pipeline": ["lenslab.validate", "lenslab.resources", "lenslab.shards", "lenslab.codedeps",
                 "lenslab.pipeline"],
}  # fmt: skip
ORDER = list(LAYERS)


def layer_of(module: str) -> str | None:
    best = None
    for layer, prefixes in LAYERS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > len(best[1])
            ):
                best = (layer, prefix)
    return best[0] if best else None


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "lenslab").rglob("*.py")):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


@pytest.mark.parametrize("module", sorted(modules()))
def test_module_has_a_layer(module):
    assert layer_of(module) is not None, f"{module} is in no layer: add it to LAYERS and the docs"


def test_imports_point_down():
    upward = []
    for module, path in modules().items():
        mine = ORDER.index(layer_of(module))
        for dep in sorted(imported_modules(SRC, path)):
            if module_file(SRC, dep) is None:
                continue  # an attribute, not a module
            theirs = ORDER.index(layer_of(dep))
            if theirs > mine:
                upward.append(f"{module} ({ORDER[mine]}) imports {dep} ({ORDER[theirs]})")
    assert not upward, "imports pointing up a layer:\n" + "\n".join(upward)


def test_the_check_sees_a_function_level_import(tmp_path):
    """The check is not blind: an import inside a function that points up is found."""
    pkg = tmp_path / "lenslab" / "models"
    pkg.mkdir(parents=True)
    (tmp_path / "lenslab" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (tmp_path / "lenslab" / "figures.py").write_text("")
    bad = pkg / "bad.py"
    bad.write_text("def f():\n    from lenslab import figures\n    return figures\n")
    found = imported_modules(tmp_path, bad)
    assert "lenslab.figures" in found
    assert ORDER.index(layer_of("lenslab.figures")) > ORDER.index(layer_of("lenslab.models.bad"))
