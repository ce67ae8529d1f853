"""`ray job submit` against a `ray start --head` cluster on loopback (tests/services.py submits it)."""

from __future__ import annotations

import pytest

from tests.services import SWEEP_TRIALS


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_ablation_runs_as_a_submitted_job(submitted_sweep):
    assert "' succeeded" in submitted_sweep.status, f"status: {submitted_sweep.status[-500:]}\nlogs: {submitted_sweep.logs[-3000:]}"
    assert "MusicSlots-none" in submitted_sweep.logs  # the comparison table was printed

    # everything landed where the job's environment said, not in its temporary working copy
    assert len(list((submitted_sweep.home / "data").glob("jazznet-single-*/manifest.json"))) == 1  # the smoke's 24-chord recipe
    assert {r["info"]["status"] for r in submitted_sweep.runs} == {"FINISHED"}
    assert len(submitted_sweep.runs) == 1 + len(SWEEP_TRIALS)  # the sweep and its trials
