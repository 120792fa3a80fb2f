"""Event-domain augmentation: each changes exactly what it says, on the right channels, per clip or per window as
documented, never the labels; and what a representation cannot honour is refused in one line."""

import numpy as np
import pytest
import torch

from yolo_etram.data.augment import AugConfig
from yolo_etram.data.event_augment import EventAugConfig, EventAugParams, augment_events, hot_pixel_mask
from yolo_etram.data.event_settings import EventSettings
from yolo_etram.utils.errors import UnsupportedOptionError

HIST = EventSettings()  # 10 bins: channels 0-9 OFF, 10-19 ON
VTEI = EventSettings("vtei")


def clip(settings, seed=0, T=3, hw=(16, 24)):
    rng = np.random.default_rng(seed)
    if settings.dtype == "int8":
        return torch.from_numpy(rng.integers(-1, 2, (T, settings.channels, *hw)).astype(np.int8))
    return torch.from_numpy(rng.integers(0, 4, (T, settings.channels, *hw)).astype(np.uint8))


def test_polarity_suppression_and_inversion_as_reyolov8_defines_them():
    """ReYOLOv8's ``SuppressPolarity``: ``img[img > 0] = 0`` (p2) else ``img[img < 0] = 0``; ``InvertPolarity``:
    ``img * -1``; suppression first."""
    img = clip(VTEI)
    ref = img.numpy().copy()
    on = augment_events(img, EventAugParams(suppress=1), VTEI, range(3)).numpy()
    ref_on = ref.copy()
    ref_on[ref_on > 0] = 0
    np.testing.assert_array_equal(on, ref_on)
    off_inv = augment_events(img, EventAugParams(suppress=2, invert=True), VTEI, range(3)).numpy()
    ref_off = ref.copy()
    ref_off[ref_off < 0] = 0
    np.testing.assert_array_equal(off_inv, ref_off * -1)
    np.testing.assert_array_equal(img.numpy(), ref)  # the input is not modified


def test_two_polarity_frames_zero_or_swap_their_channel_groups():
    img = clip(HIST)
    on = augment_events(img, EventAugParams(suppress=1), HIST, range(3))
    assert not on[:, 10:].any() and torch.equal(on[:, :10], img[:, :10])
    off = augment_events(img, EventAugParams(suppress=2), HIST, range(3))
    assert not off[:, :10].any() and torch.equal(off[:, 10:], img[:, 10:])
    inv = augment_events(img, EventAugParams(invert=True), HIST, range(3))
    assert torch.equal(inv[:, :10], img[:, 10:]) and torch.equal(inv[:, 10:], img[:, :10])


def test_event_drop_thins_counts_binomially():
    img = torch.full((4, 20, 32, 32), 8, dtype=torch.uint8)
    out = augment_events(img, EventAugParams(drop=0.25, seed=5), HIST, range(4)).numpy()
    assert out.max() <= 8 and abs(out.mean() - 6.0) < 0.05  # E = n (1 - r)
    assert np.std(out) == pytest.approx(np.sqrt(8 * 0.25 * 0.75), rel=0.05)  # binomial spread
    zero = augment_events(torch.zeros_like(img), EventAugParams(drop=0.25, seed=5), HIST, range(4))
    assert not zero.any()


def test_noise_adds_poisson_events_at_the_rate_and_saturates_at_the_cutoff():
    rate = 40.0  # events per pixel per second: 40 * 0.05 s / 10 bins / 2 polarities = 0.1 per pixel-bin
    params = EventAugParams(seed=1, noise_rate=rate)
    out = augment_events(torch.zeros(3, 20, 64, 64, dtype=torch.uint8), params, HIST, range(3)).numpy()
    assert out[:, :10].mean() == pytest.approx(0.1, rel=0.05) and out[:, 10:].mean() == pytest.approx(0.1, rel=0.05)
    full = augment_events(torch.full((1, 20, 8, 8), 10, dtype=torch.uint8), params, HIST, [0])
    assert full.max() == 10  # at the cutoff already: stays there
    again = augment_events(torch.zeros(3, 20, 64, 64, dtype=torch.uint8), params, HIST, range(3)).numpy()
    np.testing.assert_array_equal(out, again)  # a window's draw depends on the clip's seed and its index only
    assert not np.array_equal(out[0], out[1])  # and differs from window to window


def test_hot_pixels_stay_hot_for_the_whole_clip():
    params = EventAugParams(seed=7, hot_pixels=0.01, hot_pixel_rate=4000.0)  # 10 events per pixel-bin and polarity
    out = augment_events(torch.zeros(4, 20, 50, 60, dtype=torch.uint8), params, HIST, range(10, 14)).numpy()
    hot = hot_pixel_mask(7, (50, 60), 0.01)
    assert 10 < hot.sum() < 60
    assert (out[:, :, hot].mean(axis=(1, 2)) > 8).all() and not out[:, :, ~hot].any()
    other = hot_pixel_mask(8, (50, 60), 0.01)
    assert not np.array_equal(hot, other)  # another clip, other hot pixels


def test_draws_are_per_clip_and_leave_the_spatial_draws_alone():
    events = EventAugConfig(suppress_polarity=0.5, invert_polarity=0.5, event_drop=0.4)
    plain = AugConfig.stream().sample_many(np.random.default_rng(3), 200)
    with_events = AugConfig(events=events).sample_many(np.random.default_rng(3), 200)
    assert [p._replace(events=None) for p in with_events] == plain  # off: the same draws as before
    ev = [p.events for p in with_events]
    assert 0.4 < np.mean([e.suppress > 0 for e in ev]) < 0.6 and 0.4 < np.mean([e.invert for e in ev]) < 0.6
    assert {e.suppress for e in ev} == {0, 1, 2} and max(e.drop for e in ev) <= 0.4
    assert AugConfig(events=EventAugConfig()).sample_many(np.random.default_rng(3), 5) == plain[:5]  # inactive


def test_stream_slots_see_one_draw_per_sequence_and_labels_are_unchanged(tiny_events):
    from yolo_etram.data.build import build_sampler
    from yolo_etram.data.data_yaml import load_event_data
    from yolo_etram.data.dataset import EventClipDataset

    data = load_event_data(str(tiny_events))
    ds = EventClipDataset(data["train"], seq_len=3)
    events = EventAugConfig(suppress_polarity=1.0, suppress_on=1.0, event_drop=1.0)
    sampler = build_sampler(ds, data, 2, "train", seed=0, hflip=0.0, events=events)
    keys = sampler.keys(0)
    by_seq = {}
    for k in keys:
        if k.clip >= 0:
            by_seq.setdefault(int(ds.clips_stream[k.clip]["seq"]), set()).add(k.aug.events)
    assert by_seq and all(len(draws) == 1 for draws in by_seq.values())  # the memory sees one consistent world
    key = next(k for k in keys if k.clip >= 0)
    aug, plain = ds[key], ds[key._replace(aug=key.aug._replace(events=None))]  # the same flips and zooms
    assert not aug["img"][:, 10:].any() and plain["img"][:, 10:].any()  # ON suppressed
    assert aug["img"][:, :10].sum() < plain["img"][:, :10].sum()  # OFF events dropped
    assert all(
        (a is None and b is None) or np.array_equal(a, b) for a, b in zip(aug["labels"], plain["labels"])
    )  # labels untouched


@pytest.mark.parametrize(
    "cfg, settings, message",
    [
        (EventAugConfig(event_drop=0.2), VTEI, "event_drop add or remove events, which needs counts; .* vtei"),
        (EventAugConfig(noise_rate=5), EventSettings("voxel_grid"), "noise_rate .* voxel_grid"),
        (EventAugConfig(hot_pixels=0.01), EventSettings(window_events=5000), "hot_pixels are rates per second"),
    ],
)
def test_what_a_representation_cannot_honour_is_refused(cfg, settings, message):
    with pytest.raises(UnsupportedOptionError, match=message) as e:
        cfg.check(settings, "data.yaml")
    assert "\n" not in str(e.value)
    EventAugConfig(suppress_polarity=0.5, invert_polarity=0.5).check(VTEI)  # polarity ones work everywhere


def test_bad_values_are_refused():
    with pytest.raises(UnsupportedOptionError, match=r"suppress_polarity=1.5: must be in \[0, 1\]"):
        EventAugConfig(suppress_polarity=1.5)
    with pytest.raises(UnsupportedOptionError, match="noise_rate=-1.0: must be a number >= 0"):
        EventAugConfig(noise_rate=-1.0)


def test_train_arguments_reach_the_sampler(tiny_events, tmp_path):
    """``suppress_polarity=...`` is an Ultralytics train argument (recorded in args.yaml) that reaches the sampler;
    one the data cannot honour stops in one line."""
    from yolo_etram.train import EventTrainer

    args = dict(model="rvt-t.yaml", data=str(tiny_events), batch=2, workers=0, imgsz=128, project=str(tmp_path))
    trainer = EventTrainer(overrides={**args, "name": "run", "suppress_polarity": 0.5, "noise_rate": 10.0})
    loader = trainer.get_dataloader(trainer.data["train"], 2)
    assert loader.sampler.augment.events == EventAugConfig(suppress_polarity=0.5, noise_rate=10.0)
    assert "suppress_polarity: 0.5" in (tmp_path / "run" / "args.yaml").read_text()
    plain = EventTrainer(overrides={**args, "name": "plain"}).get_dataloader(trainer.data["train"], 2)
    assert plain.sampler.augment.events == EventAugConfig() and not plain.sampler.augment.events.active
