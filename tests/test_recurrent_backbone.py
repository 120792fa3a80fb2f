"""RecurrentMaxViT: shapes, parameter counts, the recurrent-state protocol and sequence invariance (with and without
temporal attention, whose memory follows the same protocol)."""

import copy
import io
import pickle

import pytest
import torch
import torch.nn.functional as F

from recurrent import ConvLSTMCell, RecurrentMaxViT, rvt_base, rvt_small, rvt_tiny

H, W = 64, 160  # smallest input for partition (2, 5): stage 4 is 2x5
PARTITION = (2, 5)


def make_model(seed: int = 0, **kwargs) -> RecurrentMaxViT:
    torch.manual_seed(seed)
    model = rvt_tiny(partition_size=PARTITION, **kwargs)
    # LayerScale starts at 1e-5, which would hide the attention branches from every comparison below.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(0.2, 1.0)
    return model.eval()


def events(*shape: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 4, shape, generator=g).float()


def assert_features_close(a, b, atol=1e-5):
    assert len(a) == len(b) == 4
    for fa, fb in zip(a, b):
        assert fa.shape == fb.shape
        torch.testing.assert_close(fa, fb, atol=atol, rtol=0)


# ---------------------------------------------------------------------------------------------------- structure


def test_stage_shapes_and_strides():
    model = make_model()
    assert model.out_channels == [32, 64, 128, 256]
    assert model.strides == [4, 8, 16, 32]
    feats = model(events(2, 20, H, W))
    assert isinstance(feats, list)
    assert [tuple(f.shape) for f in feats] == [(2, 32, 16, 40), (2, 64, 8, 20), (2, 128, 4, 10), (2, 256, 2, 5)]
    model.reset()
    feats = model(events(2, 3, 20, H, W))  # (B, T, ...) -> B*T frames
    assert [tuple(f.shape) for f in feats] == [(6, 32, 16, 40), (6, 64, 8, 20), (6, 128, 4, 10), (6, 256, 2, 5)]
    assert [tuple(h.shape) for h, _ in model.states] == [
        (2, 32, 16, 40),
        (2, 64, 8, 20),
        (2, 128, 4, 10),
        (2, 256, 2, 5),
    ]


@pytest.mark.parametrize(
    "factory, millions, out_channels",
    [
        (rvt_tiny, 3.220, [32, 64, 128, 256]),
        (rvt_small, 7.209, [48, 96, 192, 384]),
        (rvt_base, 12.785, [64, 128, 256, 512]),
    ],
)
def test_parameter_counts_match_rvt(factory, millions, out_channels):
    model = factory()
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 3) == millions
    assert model.out_channels == out_channels


def test_rvt_block_structure():
    model = make_model()
    for stage in model.stages:
        pair = stage.blocks[0]
        assert isinstance(pair.window.norm1, torch.nn.Identity)  # RVT skips the first norm after the downsample
        assert isinstance(pair.grid.norm1, torch.nn.LayerNorm) and pair.grid.norm1.eps == 1e-5
        assert pair.window.norm2.eps == 1e-5 and stage.downsample.norm.eps == 1e-5
        for block in (pair.window, pair.grid):
            assert block.attn.qkv.bias is not None and block.attn.proj.bias is not None
            assert block.attn.rel_pos is None
            assert block.attn.fused_attn
            assert block.mlp.act.__class__.__name__ == "GELU"
        assert stage.downsample.conv.bias is None
    assert model.stages[0].downsample.conv.kernel_size == (7, 7) and model.stages[0].downsample.conv.stride == (4, 4)
    assert model.stages[1].downsample.conv.kernel_size == (3, 3) and model.stages[1].downsample.conv.stride == (2, 2)
    assert not any("state" in name for name in model.state_dict())
    assert len(list(model.buffers())) == 0


def test_attention_runs_through_sdpa(monkeypatch):
    calls = []
    sdpa = F.scaled_dot_product_attention

    def counting_sdpa(*args, **kwargs):
        calls.append(args[0].shape)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting_sdpa)
    make_model()(events(1, 20, H, W))
    assert len(calls) == 8  # window + grid in each of the 4 stages
    # stage 1 window attention: (windows, heads, tokens, dim_head) = (8*8, 1, 2*5, 32)
    assert tuple(calls[0]) == (64, 1, 10, 32)


def test_set_partition_size():
    model = make_model()
    model.set_partition_size((6, 10))
    assert model.partition_size == (6, 10) and model.input_multiple == (192, 320)
    assert all(
        b.window.partition_size == (6, 10) and b.grid.partition_size == (6, 10) for s in model.stages for b in s.blocks
    )
    with pytest.raises(ValueError):
        model(events(1, 20, H, W))
    model.check_input_size(384, 640)
    model.set_partition_size(PARTITION)
    assert len(model(events(1, 20, H, W))) == 4


def test_bad_sizes_raise_clear_error():
    model = rvt_tiny(partition_size=(6, 10))
    with pytest.raises(ValueError, match="360x640.*pad bottom/right to 384x640"):
        model(torch.zeros(1, 20, 360, 640))
    with pytest.raises(ValueError, match="pad bottom/right to 384x640"):
        model.forward_with_states(torch.zeros(1, 2, 20, 384, 600))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(B, T, C, H, W\)"):
        model(torch.zeros(20, 384, 640))
    assert model.states is None


# ---------------------------------------------------------------------------------------------------- LSTM cell


def test_conv_lstm_cell_gate_order_f_i_o_g():
    torch.manual_seed(0)
    C = 3
    cell = ConvLSTMCell(C)
    x, h, c = torch.randn(2, C, 4, 5), torch.randn(2, C, 4, 5), torch.randn(2, C, 4, 5)
    z = F.conv2d(torch.cat([x, h], 1), cell.conv1x1.weight, cell.conv1x1.bias)
    f, i, o, g = z[:, :C].sigmoid(), z[:, C : 2 * C].sigmoid(), z[:, 2 * C : 3 * C].sigmoid(), z[:, 3 * C :].tanh()
    c_ref = f * c + i * g
    h_ref = o * c_ref.tanh()
    h_new, c_new = cell(x, (h, c))
    torch.testing.assert_close(h_new, h_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(c_new, c_ref, atol=1e-6, rtol=0)
    h0, c0 = cell(x)  # None state == zeros
    torch.testing.assert_close(h0, cell(x, (torch.zeros_like(x), torch.zeros_like(x)))[0])


def test_conv_lstm_cell_dws_conv_on_hidden():
    torch.manual_seed(0)
    C = 3
    cell = ConvLSTMCell(C, kernel_size=3)
    assert cell.dws_conv.groups == C and cell.dws_conv.bias is not None
    x, h, c = torch.randn(1, C, 4, 5), torch.randn(1, C, 4, 5), torch.randn(1, C, 4, 5)
    z = F.conv2d(torch.cat([x, cell.dws_conv(h)], 1), cell.conv1x1.weight, cell.conv1x1.bias)
    c_ref = z[:, :C].sigmoid() * c + z[:, C : 2 * C].sigmoid() * z[:, 3 * C :].tanh()
    torch.testing.assert_close(cell(x, (h, c))[1], c_ref, atol=1e-6, rtol=0)
    with pytest.raises(ValueError):
        ConvLSTMCell(C, kernel_size=5)


STATE_VARIANTS = {
    "lstm": {},
    # the memory of a temporal attention is state under the same protocol: every test below runs on both
    "temporal_attention": {"temporal_attention": {"memory": 3, "stages": [1, 3]}},
}


@pytest.fixture(params=list(STATE_VARIANTS))
def variant(request) -> dict:
    """Backbone keyword arguments: RVT's LSTM state alone, or with temporal attention's memory on stages 1 and 3."""
    return STATE_VARIANTS[request.param]


# ---------------------------------------------------------------------------------------------------- sequences


@torch.no_grad()
def test_sequence_invariance(variant):
    model = make_model(**variant)
    B, T = 2, 10
    x = events(B, T, 20, H, W)

    one_call = model(x)
    whole_states = model.states

    model.reset()
    halves = [model(x[:, :5]), model(x[:, 5:])]
    two_calls = [
        torch.cat([a.view(B, 5, *a.shape[1:]), b.view(B, 5, *b.shape[1:])], 1).flatten(0, 1) for a, b in zip(*halves)
    ]

    model.reset()
    steps = [model(x[:, t]) for t in range(T)]
    single_steps = [torch.stack([s[i] for s in steps], 1).flatten(0, 1) for i in range(4)]

    assert_features_close(one_call, two_calls)
    assert_features_close(one_call, single_steps)
    for (h1, c1), (h2, c2) in zip(whole_states, model.states):
        torch.testing.assert_close(h1, h2, atol=1e-5, rtol=0)
        torch.testing.assert_close(c1, c2, atol=1e-5, rtol=0)


def test_steps_one_by_one_and_batched_over_time_agree_with_gradients(variant):
    """Both orders of work (CPU default: every stage per time step; CUDA default: stages batched over B * T frames)
    give the same maps, states and gradients."""
    x = events(2, 4, 20, H, W)
    results = {}
    for mode in ("steps", "batched"):
        model = make_model(**variant).train()
        model.time_batching = mode
        feats = model(x)
        sum((f * torch.linspace(0, 1, f.numel()).view(f.shape)).sum() for f in feats).backward()
        results[mode] = feats, model.states, {n: p.grad for n, p in model.named_parameters()}
    (fs, ss, gs), (fb, sb, gb) = results["steps"], results["batched"]
    assert_features_close(fs, fb)
    for (h1, c1), (h2, c2) in zip(ss, sb):
        torch.testing.assert_close(h1, h2, atol=1e-5, rtol=0)
        torch.testing.assert_close(c1, c2, atol=1e-5, rtol=0)
    for name in gs:  # float32 sums in another order: differences scale with the gradient's size
        scale = max(1.0, gs[name].abs().max().item())
        torch.testing.assert_close(gs[name], gb[name], atol=1e-5 * scale, rtol=1e-4, msg=name)
    assert make_model(**variant).time_batching == "auto"


@torch.no_grad()
def test_frame_index_is_b_times_t_plus_t_and_slots_are_independent(variant):
    model = make_model(**variant)
    x = events(2, 3, 20, H, W)
    batched = model.forward_with_states(x)[0]
    for b in range(2):
        alone = model.forward_with_states(x[b : b + 1])[0]
        for fb, fa in zip(batched, alone):
            torch.testing.assert_close(fb[b * 3 : (b + 1) * 3], fa, atol=1e-5, rtol=0)


@torch.no_grad()
def test_forward_with_states_is_functional(variant):
    model = make_model(**variant)
    x1, x2 = events(2, 20, H, W, seed=1), events(2, 20, H, W, seed=2)
    feats1, states1 = model.forward_with_states(x1, None)
    assert model.states is None
    feats2, states2 = model.forward_with_states(x2, states1)
    assert model.states is None
    # the stateful forward is the same computation
    assert_features_close(model(x1), feats1)
    assert_features_close(model(x2), feats2)
    # states set from outside (export runner) are continued from
    model.states = states1
    assert_features_close(model(x2), feats2)
    with pytest.raises(ValueError, match="state pairs"):
        model.forward_with_states(x1, states1[:3])


# ---------------------------------------------------------------------------------------------------- resets


@torch.no_grad()
def test_reset_mask_zeroes_only_masked_slots(variant):
    model = make_model(**variant)
    x1, x2 = events(3, 20, H, W, seed=1), events(3, 20, H, W, seed=2)
    model(x1)
    before = [(h.clone(), c.clone()) for h, c in model.states]
    carried = model.forward_with_states(x2, before)[0]
    fresh = model.forward_with_states(x2, None)[0]

    model.reset(torch.tensor([False, True, False]))
    for (h, c), (h0, c0) in zip(model.states, before):
        assert h[1].abs().max() == 0 and c[1].abs().max() == 0
        assert torch.equal(h[[0, 2]], h0[[0, 2]]) and torch.equal(c[[0, 2]], c0[[0, 2]])
    out = model(x2)
    for o, car, fr in zip(out, carried, fresh):
        torch.testing.assert_close(o[[0, 2]], car[[0, 2]], atol=1e-6, rtol=0)  # kept slots: carried state
        torch.testing.assert_close(o[1], fr[1], atol=1e-6, rtol=0)  # reset slot: as from zero state
        assert (car[1] - fr[1]).abs().max() > 1e-3  # and the reset made a difference

    model.reset([True, False, False])  # a list of bools works too
    assert model.states[0][0][0].abs().max() == 0 and model.states[0][0][2].abs().max() > 0


@torch.no_grad()
def test_reset_all_and_reset_mask_edge_cases(variant):
    model = make_model(**variant)
    model.reset(torch.tensor([True]))  # no state yet: nothing to do
    assert model.states is None
    model(events(2, 20, H, W))
    model.reset(torch.tensor([True, True, False]))  # other batch size: the state cannot be used anyway
    assert model.states is None
    model(events(2, 20, H, W))
    with pytest.raises(TypeError):
        model.reset(torch.tensor([0, 1]))
    model.reset()
    assert model.states is None


@pytest.mark.parametrize("change", ["batch", "shape", "dtype"])
@torch.no_grad()
def test_implicit_reset(change, variant):
    model = make_model(**variant)
    model(events(2, 20, H, W, seed=1))
    x2 = {
        "batch": events(3, 20, H, W, seed=2),
        "shape": events(2, 20, 2 * H, W, seed=2),
        "dtype": events(2, 20, H, W, seed=2).double(),
    }[change]
    if change == "dtype":
        model.double()
    out = model(x2)
    fresh = model.forward_with_states(x2, None)[0]
    assert_features_close(out, fresh, atol=1e-6)
    assert model.states[0][0].shape[0] == x2.shape[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@torch.no_grad()
def test_implicit_reset_on_device_change(variant):
    model = make_model(**variant)
    model(events(2, 20, H, W, seed=1))
    model.cuda()
    x2 = events(2, 20, H, W, seed=2).cuda()
    assert_features_close(model(x2), model.forward_with_states(x2, None)[0], atol=1e-4)
    assert model.states[0][0].device.type == "cuda"


# ---------------------------------------------------------------------------------------------------- training


def test_training_detaches_state_between_forwards_but_not_within(variant):
    model = make_model(**variant).train()
    x1 = events(2, 2, 20, H, W, seed=1).requires_grad_()
    out1 = model(x1)
    assert all(h.grad_fn is None and c.grad_fn is None and not h.requires_grad for h, c in model.states)

    # within a forward, the gradient of the last step reaches the first step through the LSTM
    out1[3][1::2].sum().backward()  # frames t=1 of both slots, stage 4
    assert x1.grad[:, 0].abs().sum() > 0

    x2 = events(2, 20, H, W, seed=2).requires_grad_()
    x1.grad = None
    out2 = model(x2)
    sum(f.sum() for f in out2).backward()
    assert x1.grad is None  # step 2 does not reach step 1
    assert x2.grad is not None and x2.grad.abs().sum() > 0


def test_forward_backward_on_sequences(variant):
    model = make_model(**variant).train()
    x = events(2, 3, 20, H, W)
    feats = model(x)
    sum(f.square().mean() for f in feats).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert sum(p.grad.abs().sum() for p in model.parameters()) > 0


def test_state_stays_fp32_under_autocast(variant):
    model = make_model(**variant)
    x = events(2, 2, 20, H, W)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        feats = model(x)
        cell_h, cell_c = model.stages[0].lstm(torch.randn(1, 32, 4, 5).bfloat16())
    assert all(h.dtype == torch.float32 and c.dtype == torch.float32 for h, c in model.states)
    assert cell_h.dtype == cell_c.dtype == torch.float32
    # close to the fp32 result: the state does not drift with bf16 rounding
    ref = model.forward_with_states(x, None)[0]
    for f, r in zip(feats, ref):
        assert torch.isfinite(f).all()
        assert (f.float() - r).abs().max() < 0.1


# ---------------------------------------------------------------------------------------------------- copies


@torch.no_grad()
def test_deepcopy_and_pickle_drop_state(variant):
    model = make_model(**variant)
    model(events(2, 20, H, W))
    assert model.states is not None

    assert model.__getstate__()["_recurrent_states"] is None  # not even serialised
    ema = copy.deepcopy(model)
    assert ema.states is None
    assert pickle.loads(pickle.dumps(model)).states is None
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert loaded.states is None
    assert model.states is not None  # the original keeps its state

    # the copy lives with its own state
    own = [h for h, _ in model.states]
    ema(events(1, 20, H, W, seed=5))
    assert ema.states[0][0].shape[0] == 1
    assert all(a is b for a, b in zip(own, (h for h, _ in model.states)))
    assert_features_close(
        ema.forward_with_states(events(2, 20, H, W))[0], model.forward_with_states(events(2, 20, H, W))[0], atol=0
    )


# ---------------------------------------------------------------------------------------------------- devices


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@torch.no_grad()
def test_cuda_matches_cpu(variant):
    model = make_model(**variant)
    x = events(2, 3, 20, H, W)
    cpu_feats, cpu_states = model.forward_with_states(x)
    cuda_model = copy.deepcopy(model).cuda()
    cuda_feats = cuda_model(x.cuda())
    assert_features_close([f.cpu() for f in cuda_feats], cpu_feats, atol=1e-4)
    for (h, c), (hc, cc) in zip(cpu_states, cuda_model.states):
        assert hc.is_cuda and hc.dtype == torch.float32
        torch.testing.assert_close(hc.cpu(), h, atol=1e-4, rtol=0)
        torch.testing.assert_close(cc.cpu(), c, atol=1e-4, rtol=0)
    with torch.autocast("cuda", dtype=torch.float16):
        cuda_model(x.cuda())
    assert all(h.dtype == torch.float32 for h, _ in cuda_model.states)


def test_state_from_inference_mode_can_continue_in_training(variant):
    model = make_model(**variant)
    with torch.inference_mode():
        model(events(2, 20, H, W, seed=1))
    with torch.no_grad():
        carried = model.forward_with_states(events(2, 20, H, W, seed=2), model.states)[0]
    model.train()
    out = model(events(2, 20, H, W, seed=2))
    sum(f.sum() for f in out).backward()
    assert_features_close([o.detach() for o in out], carried, atol=1e-6)
