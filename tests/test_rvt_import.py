"""Whole-model RVT checkpoint import: backbone and YOLOX PAFPN against RVT's own activations."""

import numpy as np
import pytest
import torch

from yolo_etram.model import EventYOLO
from yolo_etram.nn.rvt_import import rvt_pafpn_state_dict


@pytest.mark.slow
def test_backbone_and_pafpn_match_rvt_golden(golden):
    """RVT-T weights (perturbed BN, LayerScale) and a 2-step input: stage and PAFPN outputs equal RVT's."""
    io = np.load(golden / "rvt_t_io.npz")
    model = EventYOLO("rvt-t-3scale.yaml")
    report = model.load_rvt(golden / "rvt_t.ckpt")
    assert report.backbone > 0 and report.neck > 0 and not report.missing
    assert all("yolox_head" in k for k in report.not_loaded) and report.not_loaded
    net = model.model.eval()
    taps = {}
    for row, name in ((12, "fpn_p3"), (15, "fpn_p4"), (18, "fpn_p5")):
        net.model[row].register_forward_hook(lambda m, i, o, name=name: taps.__setitem__(name, o))
    x = torch.from_numpy(io["input"]).float()  # (T, B, 20, 384, 640), time-major
    net.reset_states()
    worst = 0.0
    with torch.no_grad():
        for t in range(x.shape[0]):
            net(x[t])
            for k in ("fpn_p3", "fpn_p4", "fpn_p5"):
                ref = torch.from_numpy(io[k][t])
                err = (taps[k] - ref).abs().max().item()
                worst = max(worst, err / max(1.0, ref.abs().max().item()))
                torch.testing.assert_close(taps[k], ref, atol=1e-4, rtol=1e-4)
    for s in range(4):
        h, c = net.backbone.states[s]
        torch.testing.assert_close(h, torch.from_numpy(io[f"final_h{s + 1}"]), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(c, torch.from_numpy(io[f"final_c{s + 1}"]), atol=1e-4, rtol=1e-4)
    assert worst < 1e-4


def test_pafpn_mapping_places_every_tensor():
    """Every RVT PAFPN tensor of a T-size model lands in exactly one place of our neck, by name and shape."""
    model = EventYOLO("rvt-t-3scale.yaml").model
    rows = model.yaml["rvt_pafpn"]
    own = model.state_dict()
    ours = {k: v for k, v in own.items() if any(k.startswith(f"model.{r}.") for r in rows.values())}
    # build an RVT-named state dict from our tensors with known values, then map it back
    inverse = {}
    for k, v in ours.items():
        row = int(k.split(".")[1])
        name = next(n for n, r in rows.items() if r == row)
        rest = k.split(".", 2)[2]
        if name.startswith("C3_"):
            rest = rest.replace("cv1.", "conv1.").replace("cv2.", "conv2.").replace("cv3.", "conv3.")
        inverse[f"fpn.{name}.{rest}"] = torch.full_like(v, float(len(inverse))) if v.is_floating_point() else v
    mapped = rvt_pafpn_state_dict(inverse, rows)
    assert set(mapped) == set(ours)
    for rvt_key, tensor in inverse.items():
        assert sum(torch.equal(tensor, m) for m in mapped.values()) >= 1, rvt_key


def test_wrong_size_checkpoint_is_rejected(golden):
    model = EventYOLO("rvt-s-3scale.yaml")
    with pytest.raises(RuntimeError, match="do not match"):
        model.load_rvt(golden / "rvt_t.ckpt")
