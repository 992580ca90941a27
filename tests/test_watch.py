"""Watch a net learn: the trainer's frames (training.watch), their file (store.watchfile), TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from resnet_viz.data.batches import normalize
from resnet_viz.data.sources import make_synthetic
from resnet_viz.nets.cifar import build_model
from resnet_viz.store import watchfile
from resnet_viz.store.rundir import RunDir
from resnet_viz.training.loop import Control, fit
from resnet_viz.training.watch import feature_maps, histograms, param_groups, watch_every, watched_blocks


@pytest.fixture(scope="module")
def tiny_data():
    return make_synthetic(96, 20, seed=0)


def tiny_config(steps: int = 12, **train) -> RunConfig:
    t = dict(steps=steps, epochs=None, batch_size=16, lr=0.05, probe_every=0, log_every=2, eval_every=1000,
             watch_every=5, precision="fp32")
    t.update(train)
    return RunConfig(model=ModelConfig(depth=8, shortcut="A"), data=DataConfig(source="synthetic"),
                     train=TrainConfig(**t))


def frame_steps(run: RunDir) -> list[int]:
    """The steps of the frame lines on disk, duplicates included."""
    lines = (run.path / watchfile.WATCH_FILE).read_text().splitlines()
    return [json.loads(line)["step"] for line in lines if '"kind":"frame"' in line]


def test_the_default_gives_about_64_frames_and_zero_turns_it_off(tmp_path: Path, tiny_data) -> None:
    assert watch_every(None, 5460) == 86 and 5460 // 86 + 1 == 64  # the brief recipe's 14 epochs
    assert watch_every(None, 30) == 1 and watch_every(7, 30) == 7 and watch_every(0, 30) == 0
    with pytest.raises(ValueError, match="watch_every"):
        TrainConfig(watch_every=-1)
    with pytest.raises(ValueError, match="watch_every"):
        TrainConfig(watch_every=2.5)  # type: ignore[arg-type]
    cfg = tiny_config(steps=3, watch_every=0)
    run = RunDir.create(tmp_path, cfg)
    fit(cfg, data=tiny_data, run=run)
    assert not (run.path / watchfile.WATCH_FILE).exists() and watchfile.read_watch(run.path) is None


def test_a_run_records_its_frames_on_schedule_with_maps_and_full_histograms(tmp_path: Path, tiny_data) -> None:
    cfg = tiny_config(steps=12)
    run = RunDir.create(tmp_path, cfg)
    fit(cfg, data=tiny_data, run=run)
    w = watchfile.read_watch(run.path)
    assert w is not None
    assert w.steps == [0, 5, 10, 11]  # every 5th step from the initial weights, and the last
    assert np.array_equal(w.image, tiny_data.test_x[0].numpy()) and w.label == int(tiny_data.test_y[0])
    assert w.class_name == tiny_data.classes[w.label]
    assert w.blocks == ["stage1.block0", "stage2.block0", "stage3.block0"]
    model = build_model(cfg.model)
    sizes = {g: sum(p.numel() for p in ps) for g, ps in param_groups(model).items()}
    assert w.groups == ["stem", "stage1.block0", "stage2.block0", "stage3.block0", "fc"] == list(sizes)
    for f in w.frames:
        assert {b: m.values.shape for b, m in f.maps.items()} == {
            "stage1.block0": (5, 32, 32), "stage2.block0": (5, 16, 16), "stage3.block0": (5, 8, 8)}
        assert all(m.channels[0] == -1 and len(set(m.channels)) == 5 for m in f.maps.values())
        assert {g: int(c.sum()) for g, c in f.weights.items()} == sizes == {g: int(c.sum()) for g, c in f.grads.items()}
    # Training moved the weights: the last frame's histograms differ from the first's.
    assert any(not np.array_equal(w.frames[0].weights[g], w.frames[-1].weights[g]) for g in sizes)
    assert (run.path / watchfile.WATCH_FILE).stat().st_size < 80_000  # ~12 kB a frame for this net


def test_the_cli_prints_one_json_object_and_explains_a_run_without_frames(
    tmp_path: Path, tiny_data, capsys: pytest.CaptureFixture[str]
) -> None:
    from resnet_viz.cli.main import main

    cfg = tiny_config(steps=6, watch_every=2)
    run = RunDir.create(tmp_path, cfg)
    fit(cfg, data=tiny_data, run=run)
    assert main(["watch", run.id, "--out", str(tmp_path), "--step", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["steps"] == [0, 2, 4, 5] and out["step"] == 2 and out["label"] == "ResNet(A)-8"
    assert list(out["maps"]) == ["stage1.block0", "stage2.block0", "stage3.block0"]
    fc = out["histograms"]["fc"]
    assert sum(fc["weights"]) == sum(fc["grads"]) == 64 * 10 + 10
    assert 1e-4 < fc["median_abs_weight"] < 1 and len(out["bin_edges"]) == len(fc["weights"]) + 1
    off = RunDir.create(tmp_path, tiny_config(steps=2, watch_every=0))
    assert main(["watch", off.id, "--out", str(tmp_path)]) == 2
    assert "recorded no frames" in capsys.readouterr().err


def test_histograms_match_a_hand_count_and_a_missing_grad_counts_as_zeros() -> None:
    p1 = torch.nn.Parameter(torch.tensor([0.0, 1e-9, -0.5, 0.5, 2.0, 50.0, -1e-3]))
    p2 = torch.nn.Parameter(torch.tensor([[3e-5, -3e-5]]))
    counts = histograms([[p1], [p2]], [[p1], [p2]]).numpy()
    edges = watchfile.EDGES.astype(np.float32).astype(np.float64)  # as the device compares them
    for row, values in zip(counts, ([0.0, 1e-9, -0.5, 0.5, 2.0, 50.0, -1e-3], [3e-5, -3e-5]), strict=True):
        v = np.asarray(values, dtype=np.float32).astype(np.float64)  # -1e-3 sits on an edge: bins are [lo, hi)
        hand = np.histogram(np.clip(v, edges[0], edges[-1]), bins=edges)[0]
        assert row.tolist() == hand.tolist()
    assert counts[0][watchfile.N_BINS // 2] == 2  # 0 and 1e-9 share the centre bin (-1e-8, 1e-8)
    # Median |v| of (0, 1e-9, -0.5, 0.5, 2, 50, -1e-3): the 4th smallest |v| is 0.5, in [0.464, 1).
    assert watchfile.median_magnitude(counts[0]) == pytest.approx((10 ** (-1 / 3)) ** 0.5)
    assert watchfile.median_magnitude(counts[1]) == pytest.approx((10 ** (-14 / 3) * 10 ** (-13 / 3)) ** 0.5)
    grads = histograms([[None], [None]], [[p1], [p2]]).numpy()
    assert grads[:, watchfile.N_BINS // 2].tolist() == [7, 2] and grads.sum() == 9


def test_feature_maps_restore_the_model_and_leave_no_hooks(image: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(depth=14))
    model.train()
    model.stage2.eval()  # a mixed mode, as a caller may leave it
    model.fc.weight.requires_grad_(False)
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    running = model.bn1.running_mean.clone()
    blocks = watched_blocks(model)
    assert blocks == ["stage1.block1", "stage2.block1", "stage3.block1"]
    maps = feature_maps(model, image, blocks)
    assert [m.training for m in model.modules()] == modes and [p.requires_grad for p in model.parameters()] == flags
    assert torch.equal(model.bn1.running_mean, running)  # eval mode: the running statistics untouched
    assert all(not m._forward_hooks for m in model.modules())
    # The stored maps are the block's output for this image, in eval mode, to 1/255 of their range.
    seen = {}
    h = model.stage3.block1.register_forward_hook(lambda m, i, o: seen.update(y=o.detach()[0]))
    model.eval()
    with torch.no_grad():
        model(image)
    h.remove()
    m = maps["stage3.block1"]
    ch = m["channels"][1:]
    assert ch == seen["y"].mean((1, 2)).topk(4).indices.tolist()
    q = watchfile.decode_u8(m["data"], tuple(m["shape"])).astype(np.float32) / 255
    lo, hi = np.array(m["lo"])[:, None, None], np.array(m["hi"])[:, None, None]
    want = torch.cat([seen["y"].mean(0, keepdim=True), seen["y"][ch]]).numpy()
    assert np.abs(lo + q * (hi - lo) - want).max() <= (hi - lo).max() / 255 + 1e-6


def test_a_resumed_run_continues_its_frames_without_duplicates(tmp_path: Path, tiny_data) -> None:
    cfg = tiny_config(steps=16, watch_every=3)
    control = Control()

    def stop_at_8(records):
        if any(r["kind"] == "step" and r["step"] == 8 for r in records):
            control.request_stop()

    run = RunDir.create(tmp_path, cfg)
    assert fit(cfg, data=tiny_data, run=run, control=control, on_records=stop_at_8).steps == 8
    assert frame_steps(run) == [0, 3, 6]
    # A frame written after the checkpoint by a process that then crashed: the resumed run redoes step 9.
    watchfile.append(run.path, [{"kind": "frame", "step": 9, "maps": {}, "weights": {}, "grads": {}}])
    fit(cfg, data=tiny_data, run=RunDir.open(tmp_path, run.id), resume=True)
    assert frame_steps(run) == [0, 3, 6, 9, 12, 15]
    lines = (run.path / watchfile.WATCH_FILE).read_text().splitlines()
    assert sum('"kind":"image"' in line for line in lines) == 1
    assert watchfile.read_watch(run.path).frames[3].maps  # the redone frame, not the stale empty one


def test_tensorboard_gets_the_maps_and_histograms(tmp_path: Path, tiny_data) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(steps=6)
    run = RunDir.create(tmp_path, cfg)
    fit(cfg, data=tiny_data, run=run)
    acc = EventAccumulator(str(run.path), size_guidance={"images": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"watch/stage1.block0", "watch/stage3.block0"} <= set(tags["images"])
    assert {"weights/stem", "weights/stage2.block0", "grads/fc"} <= set(tags["histograms"])
    assert [e.step for e in acc.Histograms("weights/fc")] == [0, 5]
    img = acc.Images("watch/stage1.block0")[0]
    assert (img.width, img.height) == (5 * 33 - 1, 32)  # five maps side by side
    fc = sum(p.numel() for p in build_model(cfg.model).fc.parameters())
    assert acc.Histograms("grads/fc")[0].histogram_value.num == fc


def test_the_reader_skips_a_damaged_frame_and_finds_the_frame_at_a_step(tmp_path: Path) -> None:
    x = normalize(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), channels_last=False)
    model = build_model(ModelConfig(depth=8))
    head = {"kind": "image", "label": 1, "class": "b", "pixels": watchfile.encode_u8(np.zeros((3, 32, 32))),
            "blocks": ["stage1.block0"], "groups": ["stem"], "edges": watchfile.EDGES.tolist()}
    frame = {"kind": "frame", "maps": feature_maps(model, x, ["stage1.block0"]), "weights": {"stem": [1] * 55},
             "grads": {"stem": [0] * 55}}
    watchfile.append(tmp_path, [head, {**frame, "step": 0}, {"kind": "frame", "step": 4, "maps": {
        "stage1.block0": {"shape": [5, 32, 32], "data": "AAAA", "lo": [0] * 5, "hi": [1] * 5,
                          "channels": [-1, 0, 1, 2, 3]}}}, {**frame, "step": 8}])
    w = watchfile.read_watch(tmp_path)
    assert w is not None and w.steps == [0, 8]  # the frame with a cut-short map is skipped
    assert w.at(7).step == 0 and w.at(8).step == 8 and w.at(100).step == 8 and w.at(-1).step == 0
    assert w.at(8).weights["stem"].sum() == 55
    (tmp_path / watchfile.WATCH_FILE).write_text('{"kind": "image", "label": 1}\n')
    with pytest.raises(ValueError, match="damaged"):
        watchfile.read_watch(tmp_path)
