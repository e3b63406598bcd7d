"""How tests/data/runs-before-kinds.tar.gz was made: four finished runs written by main's code
before the intervention kinds had classes (commit 4de13b5), for the resume test of
tests/test_intervention_kinds.py. Run with that commit's source first on the path:

    git archive 4de13b5 | tar -x -C /tmp/old && PYTHONPATH=/tmp/old python THIS OUT_DIR
"""

import shutil
import sys
from pathlib import Path

import torch

import laserkit

sys.path.insert(0, str(Path(laserkit.__file__).parents[1] / "tests"))
from conftest import make_tiny  # noqa: E402

from laserkit import Intervention  # noqa: E402
from laserkit.cli.search import _iv  # noqa: E402
from laserkit.search import Context, ObjectiveConfig, RunConfig, TrialStore, run  # noqa: E402
from laserkit.search.greedy import candidate_edits  # noqa: E402
from laserkit.search.store import default_url  # noqa: E402


def seqs(model, n=40, length=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    s = torch.randint(0, model.config.vocab_size, (n, length), generator=g)
    with torch.no_grad():
        pred = model(input_ids=s[:, :-1]).logits[:, -1].argmax(-1)
    s[::2, -1] = pred[::2]
    return s.tolist()


def main(out: Path) -> None:
    torch.set_num_threads(1)
    shutil.rmtree(out, ignore_errors=True)
    model = make_tiny("llama", num_hidden_layers=3)
    obj = ObjectiveConfig(type="next-token", sequences=seqs(model), batch_size=8)
    gd = Intervention(kind="mp-threshold", estimator="gavish-donoho")
    cands = candidate_edits([("m", 2, "fc_in")], gd) + candidate_edits(
        [("m", 1, "fc_out")], Intervention(kind="mp-threshold")
    )
    cfgs = {
        "grid-vendi": RunConfig(
            strategy="grid",
            model="tiny",
            objective=obj,
            lnames=["fc_in"],
            layers=[2],
            rhos=[0.5, 0.25],
            intervention=_iv(
                "vendi-score", use_quality=True, min_diversity=False, bandwidth="median"
            ),
        ),
        "grid-rank": RunConfig(
            strategy="grid",
            model="tiny",
            objective=obj,
            lnames=["fc_in", "fc_out"],
            layers=[2],
            rhos=[0.5],
            intervention=_iv(
                "rank-reduction", use_quality=False, min_diversity=False, bandwidth="1"
            ),
        ),
        "greedy-mp": RunConfig(strategy="greedy", model="tiny", objective=obj, candidates=cands),
        "compose-mp": RunConfig(
            strategy="compose",
            model="tiny",
            objective=obj,
            lnames=["fc_in"],
            layers=[1, 2],
            rhos=[0.5],
            intervention=_iv("mp-threshold", bandwidth="1"),
        ),
    }
    for name, cfg in cfgs.items():
        (out / name).mkdir(parents=True)
        store = TrialStore(default_url(out / name), name, create=cfg)
        run(store, ctx=Context(store.config, model))
        (out / name / "trials.db.lock").unlink(missing_ok=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
