"""``etram-yolo ablate``: the statistics against hand-computed values, the spec's checks, the tables, plot and record
of an ablation, resuming, and (slow) a real ablation of two variants over two seeds on tiny data."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from yolo_etram.experiments.ablate import RECORD, run_ablation, run_dir, run_state
from yolo_etram.experiments.spec import AblationSpec
from yolo_etram.experiments.stats import paired_difference, summarize
from yolo_etram.utils.errors import ExperimentError

# Student's t with 2 degrees of freedom has closed forms: F(t) = 1/2 + t / (2 sqrt(2 + t^2)) and its inverse
# t_q = a sqrt(2 / (1 - a^2)) with a = 2q - 1. They are the hand computations below.
T975_DOF2 = 0.95 * math.sqrt(2 / (1 - 0.95**2))  # 4.302652...


def test_summary_of_three_seeds_by_hand():
    s = summarize([0.27, 0.29, 0.25])
    assert s.n == 3 and s.mean == pytest.approx(0.27)
    assert s.std == pytest.approx(0.02)  # sqrt((0 + 0.02^2 + 0.02^2) / 2)
    half = T975_DOF2 * 0.02 / math.sqrt(3)
    assert s.ci == pytest.approx((0.27 - half, 0.27 + half))
    assert s.ci == pytest.approx((0.22032, 0.31968), abs=1e-5)


def test_paired_difference_by_hand():
    d = paired_difference(base=[0.27, 0.29, 0.25], other=[0.30, 0.31, 0.27])  # d = 0.03, 0.02, 0.02
    assert d.n == 3 and d.mean == pytest.approx(0.07 / 3)
    sd = math.sqrt(((0.03 - 0.07 / 3) ** 2 + 2 * (0.02 - 0.07 / 3) ** 2) / 2)
    t = (0.07 / 3) / (sd / math.sqrt(3))
    assert t == pytest.approx(7.0)
    assert d.p_value == pytest.approx(2 * (0.5 - t / (2 * math.sqrt(2 + t * t))))  # 0.0198
    assert d.p_value == pytest.approx(0.0198, abs=1e-4)
    half = T975_DOF2 * sd / math.sqrt(3)
    assert d.ci == pytest.approx((0.07 / 3 - half, 0.07 / 3 + half))
    # unpaired values (a seed the variant lacks) are left out, not compared with another seed
    assert paired_difference([0.1, 0.2, None], [0.2, None, 0.9]).n == 1


def test_one_seed_never_gets_an_interval():
    s = summarize([0.3])
    assert s.mean == 0.3 and s.std is None and s.ci is None and "one seed" in s.why_no_interval
    d = paired_difference([0.3], [0.4])
    assert d.mean == pytest.approx(0.1) and d.ci is None and d.p_value is None and "one paired seed" in d.why_no_test
    assert summarize([None, float("nan")]).n == 0
    same = paired_difference([0.1, 0.2], [0.2, 0.3])  # every seed gains exactly 0.1: no spread, p = 0
    assert same.mean == pytest.approx(0.1) and same.p_value < 1e-9


def write_spec(path: Path, **changes) -> Path:
    """A spec of two variants: the baseline and no flips (Ultralytics' default fliplr is 0.5)."""
    spec = {
        "data": "data.yaml",
        "seeds": [0, 1],
        "train": {"model": "rvt-t.yaml", "epochs": 1, "batch": 2},
        "baseline": "base",
        "variants": {"base": {}, "noflip": {"fliplr": 0.0}},
        "hypothesis": "flips help",
        **changes,
    }
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"seeds": []}, "seeds must be a list"),
        ({"seeds": [0, 0]}, "seeds repeat"),
        ({"baseline": "nope"}, "baseline 'nope' is not one of"),
        ({"variants": {"base": {}, "x": {"fliplrr": 0.5}}}, "['fliplrr'] are not Ultralytics train arguments"),
        ({"variants": {"base": {"seed": 3}}}, "['seed'] are set by the ablation"),
        ({"train": {"epochs": 1}}, "no model"),
        ({"metric": "AP"}, "unknown key(s) ['metric']"),
        ({"variants": {"base": {}, "x": {"data_keys": {"channels": 10}}}}, "['channels'] cannot vary"),
        ({"variants": {"base": {}, "flip": {"fliplr": 0.5}}}, "'flip' trains exactly as the baseline: fliplr=0.5"),
    ],
)
def test_bad_specs_are_one_line_errors_naming_the_file(tmp_path, changes, message):
    path = write_spec(tmp_path / "bad.yaml", **changes)
    with pytest.raises(ExperimentError) as e:
        AblationSpec.load(path)
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_runs_go_seed_by_seed_with_their_own_arguments(tmp_path):
    (tmp_path / "data.yaml").write_text("path: .\n")
    spec = AblationSpec.load(write_spec(tmp_path / "s.yaml"))
    runs = spec.runs()
    assert [r.name for r in runs] == ["base-seed0", "noflip-seed0", "base-seed1", "noflip-seed1"]
    assert runs[1].args["fliplr"] == 0.0 and "fliplr" not in runs[0].args
    assert runs[3].args["seed"] == 1 and runs[3].args["data"] == str((tmp_path / "data.yaml").resolve())


def test_the_shipped_specs_load_by_name():
    """Every shipped comparison runs 3 seeds or more; a single-variant spec trains what another needs (the full
    resolution teacher of resolution_levers.yaml) and compares nothing."""
    from yolo_etram.utils.paths import cfg_dir, find_cfg

    specs = sorted((cfg_dir() / "ablations").glob("*.yaml"))
    assert specs
    for path in specs:
        spec = AblationSpec.load(path.name)
        assert spec.baseline in spec.variants
        assert len(spec.seeds) >= 3 or len(spec.variants) == 1, path.name
        assert find_cfg(spec.data_path(), "datasets") is not None, spec.data


def test_a_variant_changes_data_keys_through_its_own_data_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative `path` is looked up from the working directory (then datasets_dir)
    (tmp_path / "prepared").mkdir()
    (tmp_path / "data.yaml").write_text("path: prepared\ntrain: train\nval: val\nnames: {0: car}\nseq_len: 5\n")
    variants = {"base": {}, "t10": {"data_keys": {"seq_len": 10, "size_aware": {"a": 1.0, "tau": 256}}}}
    spec = AblationSpec.load(write_spec(tmp_path / "s.yaml", variants=variants))
    out = tmp_path / "out"
    spec.write_variant_data(out)
    runs = {r.name: r for r in spec.runs(out)}
    assert runs["base-seed0"].args["data"] == str((tmp_path / "data.yaml").resolve())
    changed = yaml.safe_load(Path(runs["t10-seed1"].args["data"]).read_text())
    assert changed["seq_len"] == 10 and changed["size_aware"] == {"a": 1.0, "tau": 256}
    assert changed["path"] == str((tmp_path / "prepared").resolve()) and changed["names"] == {0: "car"}
    assert "data_keys" not in runs["t10-seed0"].args  # not a train argument


def test_a_variant_trains_on_another_representation_prepared_on_first_use(tmp_path):
    """``data_keys: {representation: ...}``: the same synthetic recordings seen as VTEI, prepared beside the
    histograms when the variant's data is first loaded; its channels come from the data."""
    from events_fixture import make_tiny_event_data

    from yolo_etram.data.data_yaml import load_event_data
    from yolo_etram.data.prepared import list_sequences

    data = make_tiny_event_data(tmp_path / "d", train=1, val=1, test=0)
    (tmp_path / "d" / "raw").rename(tmp_path / "d" / "prepared_raw")  # where a synthetic set keeps its recordings
    spec_data = {**yaml.safe_load(Path(data).read_text()), "synth": {"width": 128, "height": 96}}
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(spec_data))
    variants = {"hist": {}, "vtei": {"data_keys": {"representation": "vtei_dt=50_nbins=5"}}}
    spec = AblationSpec.load(write_spec(tmp_path / "s.yaml", variants=variants, baseline="hist"))
    out = tmp_path / "out"
    spec.write_variant_data(out)
    runs = {r.name: r for r in spec.runs(out)}
    d = load_event_data(runs["vtei-seed0"].args["data"])
    assert d["channels"] == 5 and d["event_settings"]["representation"] == "vtei"
    for seq in list_sequences(Path(data).parent / "val"):
        assert sorted(p.name for p in (seq / "event_representations_v2").iterdir()) == [
            "stacked_histogram_dt=50_nbins=10", "vtei_dt=50_nbins=5",
        ]  # fmt: skip
    assert load_event_data(runs["hist-seed0"].args["data"])["channels"] == 20


def test_ranks_train_on_their_own_gpu(monkeypatch):
    from yolo_etram.experiments.ablate import rank_device

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert rank_device({"epochs": 1}) == {"epochs": 1}
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    assert rank_device({"epochs": 1}) == {"epochs": 1, "device": 1}
    assert rank_device({"device": "cpu"}) == {"device": "cpu"}  # the spec's word wins
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    assert rank_device({"epochs": 1}) == {"epochs": 1}  # CPU ranks: as given


def fake_record(folder: Path, ap: float, small: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights").mkdir(exist_ok=True)
    (folder / "weights" / "best.pt").write_bytes(b"")
    record = {
        "wall_time_s": 120.0,
        "speed_ms_per_window": 40.0,
        "metrics": {
            "prophesee": {"AP": ap, "AP_50": 2 * ap, "AP_75": ap / 2},
            "by_size": {"AP_S": small},
            "groups": {"small": small},
            "etram_AP50": {"All": 2 * ap + 0.1},
            "motion": {"moving": {"AP": ap + 0.1}, "stationary": {"AP": ap / 10}},
        },
    }
    (folder / RECORD).write_text(json.dumps(record))


def test_coco_minus_one_is_no_number():
    """COCO writes -1 where the data holds no box of a kind (no large boxes): the tables show no number, not -1."""
    from yolo_etram.experiments.metrics import run_metrics

    m = run_metrics({"metrics": {"by_size": {"AP_S": 0.1, "AP_L": -1.0}, "groups": {"small": -1}}})
    assert m["AP_S"] == 0.1 and m["AP_L"] is None and m["group small"] is None and m["AP"] is None


def test_finished_runs_are_skipped_and_the_results_written(tmp_path, monkeypatch):
    """With every run's record in place the ablation trains nothing (it resumes) and writes tables, plot, record."""
    (tmp_path / "data.yaml").write_text("path: .\n")
    spec_path = write_spec(tmp_path / "s.yaml", seeds=[0, 1, 2])
    out = tmp_path / "out"
    spec = AblationSpec.load(spec_path)
    aps = {("base", 0): 0.27, ("base", 1): 0.29, ("base", 2): 0.25, ("noflip", 0): 0.30, ("noflip", 1): 0.31}
    for (variant, seed), ap in aps.items():
        fake_record(out / "runs" / f"{variant}-seed{seed}", ap, small=ap / 2)
    trained = []
    monkeypatch.setattr("yolo_etram.experiments.ablate.train_one", lambda run, folder, quiet: trained.append(run.name))
    monkeypatch.setattr("yolo_etram.data.data_yaml.load_event_data", lambda data, split=None: {})
    with pytest.raises(FileNotFoundError):  # noflip-seed2 has no record: it was "trained" but wrote nothing
        run_ablation(spec_path, out)
    assert trained == ["noflip-seed2"]
    fake_record(out / "runs" / "noflip-seed2", 0.27, small=0.135)
    trained.clear()
    run_ablation(spec_path, out)
    assert trained == [] and all(run_state(run_dir(out, r)) == "done" for r in spec.runs())

    rows = {(r["variant"], r["metric"]): r for r in csv.DictReader(open(out / "ablation.csv"))}
    base, flip = rows[("base", "AP")], rows[("noflip", "AP")]
    assert float(base["mean"]) == pytest.approx(0.27) and float(base["std"]) == pytest.approx(0.02)
    assert float(flip["diff"]) == pytest.approx(0.07 / 3) and float(flip["p_value"]) == pytest.approx(0.0198, abs=1e-4)
    assert rows[("noflip", "group small")]["diff"] and rows[("base", "stationary AP")]["mean"]
    assert rows[("base", "parked AP")]["seeds"] == "0"  # no run has it: no number made up
    md = (out / "ablation.md").read_text()
    assert "flips help" in md and "raises AP by +0.023" in md
    assert "group small" in md.splitlines()[6]  # a column of the table
    assert (out / "ablation.png").stat().st_size > 10_000
    record = json.loads((out / RECORD).read_text())
    assert record["kind"] == "ablation" and len(record["runs"]) == 6 and record["runs"][0]["checkpoints"]
    for name in ("experiment_hypothesis.txt", "experiment_config.yaml", "training_command.txt", "metrics_summary.txt"):
        assert (out / name).read_text().strip(), name
    assert "fliplr=0.0" in (out / "training_command.txt").read_text()


def test_a_failed_run_stops_the_ablation_with_its_name(tmp_path, monkeypatch):
    (tmp_path / "data.yaml").write_text("path: .\n")
    spec_path = write_spec(tmp_path / "s.yaml", seeds=[0])

    class Failed:
        returncode = 3

    monkeypatch.setattr("yolo_etram.experiments.ablate.subprocess.run", lambda *a, **k: Failed())
    monkeypatch.setattr("yolo_etram.data.data_yaml.load_event_data", lambda data, split=None: {})
    with pytest.raises(ExperimentError, match="run base-seed0 failed"):
        run_ablation(spec_path, tmp_path / "out")


@pytest.mark.slow
def test_a_real_ablation_over_two_seeds_runs_resumes_and_compares(tiny_events, tmp_path):
    spec_path = write_spec(
        tmp_path / "s.yaml",
        data=str(tiny_events),
        train={"model": "rvt-t.yaml", "epochs": 1, "batch": 2, "workers": 0, "imgsz": 128, "plots": False},
    )
    out = tmp_path / "out"
    run_ablation(spec_path, out, quiet=True)
    rows = {(r["variant"], r["metric"]): r for r in csv.DictReader(open(out / "ablation.csv"))}
    assert rows[("base", "AP")]["seeds"] == "2" and rows[("noflip", "AP")]["p_value"] != ""
    assert float(rows[("base", "train min")]["mean"]) > 0 and float(rows[("base", "ms/window")]["mean"]) > 0
    first = (out / "ablation.csv").read_text()
    stamp = (out / "runs" / "base-seed0" / RECORD).stat().st_mtime
    run_ablation(spec_path, out, quiet=True)  # everything done: nothing retrains, the same numbers
    assert (out / "runs" / "base-seed0" / RECORD).stat().st_mtime == stamp
    assert (out / "ablation.csv").read_text() == first

    from yolo_etram.metrics.records import main as compare

    assert compare([str(out)]) == 0
