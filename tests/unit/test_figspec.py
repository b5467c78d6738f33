"""Every figure is declared once (lenslab.figspec): its options schema, report caption, report
family and README row all come from that declaration."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest
from helpers import REPO

from lenslab.errors import LensLabError
from lenslab.figspec import FIGURES, figure_family, parse_figure_options

RULE_TEXT = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))


@pytest.mark.parametrize("fid", sorted(FIGURES))
def test_each_figure_has_schema_caption_and_rule(fid):
    spec = FIGURES[fid]
    assert dataclasses.is_dataclass(spec.options)
    parse_figure_options(fid, {})  # every option has a default
    assert (REPO / "workflow" / "report" / spec.caption_file).is_file(), spec.caption_file
    drawn = re.search(rf'figure_report\("{fid}"', RULE_TEXT) or (
        fid in ("F2", "F3", "F4", "F5", "F6") and 'figure_report("{fid}"' in RULE_TEXT
    )
    assert drawn, f"no rule declares {fid}'s PNG through figure_report (its report entry)"


def test_registered_figures_are_declared():
    registered = set(re.findall(r'register_figure\("(F\w+)"', RULE_TEXT))
    registered |= set(
        re.findall(r"for _fid in \(([^)]*)\)", RULE_TEXT)[0]
        .replace('"', "")
        .replace(" ", "")
        .split(",")
    )
    assert registered - {""} <= set(FIGURES), registered - set(FIGURES)


def test_readme_has_every_figure_row():
    table = subprocess.run(
        [sys.executable, "-m", "lenslab.figspec"], capture_output=True, text=True, check=True
    ).stdout
    readme = (REPO / "README.md").read_text()
    missing = [row for row in table.splitlines() if row not in readme]
    assert not missing, (
        "README's figure table is stale: paste `python -m lenslab.figspec`:\n" + "\n".join(missing)
    )


def test_families_group_figures_by_method():
    assert figure_family("F9") == "attribute lens"
    assert figure_family("F11") == figure_family("F12") == "patchscopes"
    assert figure_family("F16c") == "look-ahead"
    assert figure_family("F10") == "direct logit attribution"


def test_defaults_live_in_the_schema():
    """Options come back complete: the rules read defaults from here, never repeat them."""
    assert dataclasses.asdict(parse_figure_options("F16", {})) == {"max_ahead": 3}
    assert parse_figure_options("F15", {"layer": 2}).position == -1
    with pytest.raises(LensLabError, match=r"study figure F16: .*max_ahead=0 must be >= 1"):
        parse_figure_options("F16", {"max_ahead": 0})
    with pytest.raises(LensLabError, match=r"normalise='yes' of VisibilityOptions is not a bool"):
        parse_figure_options("F15", {"normalise": "yes"})
