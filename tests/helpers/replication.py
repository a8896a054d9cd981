"""Per-sample measures as compare() writes them (measures.json), drawn at random, for the replication tests."""

from eg3d_rlhf.analysis import collateral
from eg3d_rlhf.data import annotators

#----------------------------------------------------------------------------

def fake_measures(rng, n, **scores):
    """collateral.measure()'s shape for n samples: every taste, mesh statistic and true property drawn from rng
    (a numpy Generator), a taste given in scores (name=[n values]) as given."""
    tastes = {t: list(scores[t]) if t in scores else list(rng.normal(size=n)) for t in annotators.TASTES}
    return dict(tastes=tastes, mesh={s: list(rng.normal(size=n)) for s in collateral.MESH_STATS},
        truth={t: list(rng.normal(0.3, 0.01, size=n)) for t in collateral.TRUTH}, diversity=1.0)

#----------------------------------------------------------------------------
