"""The memory-evidence script's bookkeeping (benchmarks/evidence_memory.py): every run it accepts has a label in its
table, and an unknown run is refused before any data is built or anything trained. The training itself is
`make evidence` (an hour), not a test."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "evidence_memory.py"


@pytest.fixture(scope="module")
def evidence():
    spec = importlib.util.spec_from_file_location("evidence_memory", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_result(epochs: int) -> dict:
    subsets = {k: {"AP": 0.1} for k in ("moving", "stationary", "parked")}
    recall = {"moving": {"recall": 0.5, "n": 3}, "parked": {"recall": None, "n": 0}}
    return {
        "epochs": epochs,
        "step_ms": 1.0,
        "train_s": 60.0,
        "prophesee": {"AP": 0.2, "AP_50": 0.3, "subsets": subsets},
        "recall_by_time_stopped": recall,
    }


def test_every_run_and_its_continuation_has_a_row(evidence):
    keys = [k for first in evidence.LABELS for k in (first, f"{first}_more")]
    text = evidence.table({k: fake_result(6) for k in keys})
    rows = [r for r in text.splitlines() if r.startswith("| rvt-t") or r.startswith("| yolov8n")]
    assert len(rows) == 2 * len(keys)  # one AP row and one recall row per run
    assert "backpropagation through 2T windows, 6 more epochs from its weights" in text


def test_an_unknown_run_is_refused_before_any_work(evidence, tmp_path):
    with pytest.raises(SystemExit, match="unknown run.*'tbptt_les'"):
        evidence.main(["--models", "recurrent,tbptt_les", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_seeds_summarize_into_means_and_paired_differences(evidence, tmp_path):
    outs = []
    for seed, (base, ta) in enumerate([(0.02, 0.10), (0.04, 0.14)]):
        results = {"recurrent": fake_result(6), "temporal": fake_result(6), "tbptt": fake_result(6)}
        if seed:  # a run only some seeds have is summarized over those
            del results["tbptt"]
        for key, stationary in (("recurrent", base), ("temporal", ta), ("tbptt", 0.0)):
            if key not in results:
                continue
            results[key]["prophesee"]["subsets"] = {
                "moving": {"AP": 0.4},
                "parked": {"AP": 0.0},
                "stationary": {"AP": stationary, "AP_50": 0.2, "AP_75": 0.1},
            }
        (tmp_path / str(seed)).mkdir()
        (tmp_path / str(seed) / "evidence.json").write_text(evidence.json.dumps({"results": results}))
        outs.append(tmp_path / str(seed))
    means, pairs = (t.splitlines() for t in evidence.summarize_seeds(outs).split("\n\n"))
    assert means[0].startswith("| run | seeds |")
    assert means[2].startswith("| `recurrent` | 2 | 0.200 +- 0.000 | 0.400 |")
    assert "| 0.030 +- 0.014 |" in means[2] and "| 0.120 +- 0.028 |" in means[3]  # stationary AP over the seeds
    assert means[3].endswith("| 0.300 |")  # stationary / moving
    assert means[4].startswith("| `tbptt` | 1 | 0.200 | 0.400 | 0.000 |")  # a run only one seed has
    assert pairs[2].startswith("| `temporal` | +0.000 [") and "| +0.090 [" in pairs[2]  # paired with rvt-t's seeds
    assert pairs[3].startswith("| `tbptt` |") and "| -0.020 |" in pairs[3]  # one pair: no interval
