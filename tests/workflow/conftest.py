"""Workflow tests run the pipeline (Snakemake, the test study, a local SLURM): every test in this
directory is slow (`pytest -m "not slow"` leaves them out)."""

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/workflow/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.slow)
