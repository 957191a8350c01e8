"""Seeds that once broke the replica (or the simulator), kept as named regression tests.

Each entry says what went wrong; the seed and the profile generator's
generation at the time (`SimOptions.from_seed(seed, generation=g)`) replay the
scenario exactly, whatever the generator learns later.
"""

from __future__ import annotations

import pytest

from tests.sim.cluster import Cluster, SimOptions

pytest.importorskip("consensus.replica", reason="the replica has not landed yet")

SEEDS = {  # all found with generation 1
    2: "a quorum of COMMITs for a block a replica never saw must trigger catch-up",
    73: "NEW-VIEW timers must not make replicas leapfrog views (n=7, 2 Byzantine, 20% loss)",
    294: "lagging replicas see one correct peer ahead (the Byzantine is silent to them): "
    "catch-up must start anyway (n=4)",
    205: "same as 294 with n=7: two silent Byzantine nodes, four lagging correct replicas",
    232: "same as 294 with n=7: one correct replica ahead of four",
    170: "a minority that committed must pull the rest along (n=10, 3 Byzantine)",
}


@pytest.mark.parametrize("seed", sorted(SEEDS), ids=lambda s: f"seed={s}")
def test_regression_seed(seed: int) -> None:
    Cluster(SimOptions.from_seed(seed, generation=1)).run()


LATER_SEEDS = {  # seed -> (generation, what broke)
    1551: (
        6,
        "an observer restarted below a membership change drops every gossiped block of the "
        "new epoch as wrong_epoch and never starts catch-up (stuck at height 1 forever)",
    ),
    3117: (6, "same as 1551 with the primary twinned, a validator removed and two observers"),
    8479: (
        6,
        "a view change across an epoch boundary: the NEW-VIEW's re-proposals spanned two "
        "epochs, so heights of the new one were prepared under the wrong primary and every "
        "later VIEW-CHANGE carrying them was dropped (n=7, twins; stuck at height 26)",
    ),
    21845: (
        6,
        "a replica behind in execution (executed 17) formed the commit certificate of height "
        "34 from q COMMITs before it had executed the block that removed a validator from "
        "height 33: the certificate named epoch 0, counted against the old set and quorum "
        "(n=10, 3 Byzantine, remove@19)",
    ),
    41226: (
        6,
        "crashes lost the CHECKPOINT messages of height 16 and restarts lost the signed "
        "copies (only the own checkpoints were journaled), so 16 never became stable and "
        "the view change at the epoch boundary 17 waited for it forever (n=4, rotate@11)",
    ),
}


@pytest.mark.parametrize("seed", sorted(LATER_SEEDS), ids=lambda s: f"seed={s}")
def test_regression_seed_later_generation(seed: int) -> None:
    generation, _ = LATER_SEEDS[seed]
    Cluster(SimOptions.from_seed(seed, generation=generation)).run()
