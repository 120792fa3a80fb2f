"""``benchmarks/frequency.py``: one model validated at other window lengths (window = step), with its table and plot;
validation at another frame rate is allowed (with a warning), another representation is not."""

import csv
import sys

import pytest
from conftest import REPO
from events_fixture import make_tiny_event_data

sys.path.insert(0, str(REPO / "benchmarks"))
import frequency  # noqa: E402

from yolo_etram import EventYOLO  # noqa: E402


@pytest.mark.slow
def test_ap_against_window_length(tmp_path):
    data = make_tiny_event_data(tmp_path / "d", train=1, val=1, test=0)
    model = EventYOLO("rvt-t.yaml")
    model.train(data=str(data), epochs=1, batch=2, workers=0, imgsz=128, plots=False, val=False,
                project=str(tmp_path), name="run")  # fmt: skip
    best = tmp_path / "run" / "weights" / "best.pt"
    out = tmp_path / "freq"
    argv = [str(best), "--data", str(data), "--raw", str(tmp_path / "d" / "raw"), "--windows", "25", "50"]
    assert frequency.main([*argv, "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "frequency.csv").open()))
    assert [int(r["window_ms"]) for r in rows] == [25, 50] and all(0 <= float(r["AP"]) <= 1 for r in rows)
    assert (out / "frequency.png").stat().st_size > 10_000 and "| 50 (trained) | 20 |" in (
        out / "frequency.md"
    ).read_text()
    seq = next((out / "prepared" / "val").iterdir())
    assert sorted(p.name for p in (seq / "event_representations_v2").iterdir()) == [
        "stacked_histogram_dt=25_nbins=10_step=25", "stacked_histogram_dt=50_nbins=10",
    ]  # fmt: skip
    # the 50 ms row is the model's own validation on its own data: the same AP
    ref = EventYOLO(str(best)).val(data=str(data), batch=1, workers=0, plots=False, project=str(tmp_path), name="v")
    assert float(rows[1]["AP"]) == pytest.approx(ref.prophesee["AP"], abs=1e-6)
