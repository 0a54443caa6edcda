"""Fine-tuning: the loss goes down, resuming is exact, limits are honoured and
bad data is reported before training starts."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

from salicon import formats
from salicon.cli import main
from salicon.data import DataError
from salicon.engine import Net
from salicon.train import TrainConfig, Trainer, TrainingError, train

from .conftest import randomise

SOLVER = """
net: "{net}"
base_lr: {lr}
lr_policy: "step"
gamma: 0.5
stepsize: 40
momentum: 0.9
weight_decay: 0.0005
display: 2
snapshot: {snapshot}
snapshot_prefix: "salicon"
"""


def make_data(root, n=5, size=(48, 64), seed=0):
    """Random textures with a bright disc; the fixation map peaks on the disc."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "maps").mkdir()
    yy, xx = np.mgrid[:size[0], :size[1]]
    for i in range(n):
        cy, cx = rng.integers(10, size[0] - 10), rng.integers(10, size[1] - 10)
        img = rng.integers(0, 120, size + (3,)).astype(np.uint8)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 36
        img[disc] = 255
        fmap = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 6.0 ** 2))
        Image.fromarray(img).save(root / "images" / f"im{i}.jpg", quality=95)
        Image.fromarray(np.round(fmap * 255).astype(np.uint8)).save(root / "maps" / f"im{i}.png")
    return root


@pytest.fixture
def setup(tmp_path, tiny_train_prototxt):
    data = make_data(tmp_path / "data")
    weights = tmp_path / "init.caffemodel"
    randomise(Net(tiny_train_prototxt, phase="train"), seed=1).save(weights)

    def config(out, lr=1e-3, snapshot=0, **kw):
        solver = tmp_path / f"solver_{lr}_{snapshot}.prototxt"
        solver.write_text(SOLVER.format(net=tiny_train_prototxt, lr=lr, snapshot=snapshot))
        kw.setdefault("input_scale", 1 / 255)
        return TrainConfig(data=str(data), out=str(tmp_path / out), solver=str(solver), weights=str(weights),
                           device="cpu", test=1, seed=3, **kw)
    return config


def test_loss_goes_down(setup):
    cfg = setup("run", max_iter=60)
    trainer = Trainer(cfg, log=lambda m: None)
    train_set, test_set = trainer.load_data()
    before = np.mean([trainer.backend.loss(trainer.feeds(s)) for s in train_set])
    result = trainer.run(progress=False)
    after = np.mean([trainer.backend.loss(trainer.feeds(s)) for s in train_set])
    assert result.iterations == 60 and result.stop_reason == "max_iter"
    assert after < 0.8 * before
    out = trainer.out
    split = json.loads((out / "split.json").read_text())
    assert len(split["test"]) == 1 and len(split["train"]) == 4 and not set(split["test"]) & set(split["train"])
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any(r["event"] == "epoch" and r["val_loss"] is not None and "val_CC" in r for r in records)
    assert result.val_metrics["val_CC"] > -1
    assert records[-1]["event"] == "end" and records[-1]["iter"] == 60
    assert {"loss", "lr", "img_per_s"} <= set(next(r for r in records if r["event"] == "train"))
    assert (out / "salicon_iter_60.caffemodel").exists() and (out / "salicon_iter_60.solverstate").exists()
    assert Image.open(out / "loss.png").size == (800, 450)


def test_resume_reproduces_the_uninterrupted_run(setup):
    straight = train(setup("straight", max_iter=10), progress=False, log=lambda m: None)
    first = train(setup("resumed", max_iter=4), progress=False, log=lambda m: None)
    assert first.final_state.name == "salicon_iter_4.solverstate"
    resumed = train(setup("resumed", max_iter=10, resume=str(first.final_state)), progress=False,
                    log=lambda m: None)
    assert resumed.iterations == 10
    a = formats.load_caffemodel_arrays(straight.final_model)
    b = formats.load_caffemodel_arrays(resumed.final_model)
    assert a.keys() == b.keys()
    for name in a:
        for x, y in zip(a[name], b[name]):
            np.testing.assert_array_equal(x, y)


def test_time_limit_is_honoured(setup):
    start = time.perf_counter()
    result = train(setup("timed", time_limit=2.0), progress=False, log=lambda m: None)
    assert result.stop_reason == "time limit" and result.iterations > 0
    per_step = result.seconds / result.iterations
    assert time.perf_counter() - start < 2.0 + 10 * per_step + 15  # data preparation and the final snapshot


def test_periodic_snapshots(setup):
    result = train(setup("snaps", max_iter=6, snapshot=2), progress=False, log=lambda m: None)
    out = result.final_model.parent
    assert sorted(p.name for p in out.glob("*.caffemodel")) == [f"salicon_iter_{i}.caffemodel" for i in (2, 4, 6)]


def test_non_finite_loss_stops_and_keeps_good_weights(setup):
    with pytest.raises(TrainingError, match="non-finite loss") as err:
        train(setup("nan", lr=1e12, max_iter=50), progress=False, log=lambda m: None)
    model = err.value.args[0].rsplit(" ", 1)[-1]
    for blobs in formats.load_caffemodel_arrays(model).values():
        for b in blobs:
            assert np.isfinite(b).all()


def test_bad_data_is_listed_at_once(tmp_path, setup):
    data = make_data(tmp_path / "bad", n=4)
    (data / "images" / "im0.jpg").rename(data / "images" / "orphan.jpg")     # image without map, map without image
    (data / "images" / "im1.jpg").write_bytes(b"not a jpeg")                   # unreadable
    Image.new("L", (10, 10)).save(data / "maps" / "im2.png")                   # wrong size
    cfg = setup("x")
    cfg.data = str(data)
    with pytest.raises(DataError) as err:
        Trainer(cfg, log=lambda m: None).load_data()
    message = str(err.value)
    assert "orphan.jpg: no fixation map" in message and "im0.png: no image" in message
    (data / "images" / "orphan.jpg").rename(data / "images" / "im0.jpg")
    with pytest.raises(DataError) as err:
        Trainer(cfg, log=lambda m: None).load_data()
    message = str(err.value)
    assert message.startswith("2 problem(s)")
    assert "im1.jpg" in message and "im2.png: fixation map is 10x10 but its image im2.jpg is 64x48" in message
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "maps").mkdir()
    cfg.data = str(empty)
    with pytest.raises(DataError, match="no image files"):
        Trainer(cfg, log=lambda m: None).load_data()


def test_cli_train_and_finetune_script(setup, tmp_path):
    cfg = setup("cli")
    code = main(["train", "--data", cfg.data, "--out", cfg.out, "--solver", cfg.solver, "--weights", cfg.weights,
                 "--max-iter", "3", "--device", "cpu", "--test", "1", "-q"])
    assert code == 0
    assert (tmp_path / "cli" / "salicon_iter_3.caffemodel").exists()
    code = main(["train", "--data", str(tmp_path / "nowhere"), "--out", cfg.out, "-q"])
    assert code == 1


def test_train_on_caffe_engine(setup):
    from salicon.runtimes.caffe import caffe_available
    if not caffe_available():
        pytest.skip("pycaffe not importable; build it with scripts/install_caffe.sh")
    result = train(setup("caffe", max_iter=4, engine="caffe"), progress=False, log=lambda m: None)
    assert result.iterations == 4 and result.final_model.exists()
    torch_run = train(setup("torch", max_iter=4), progress=False, log=lambda m: None)
    a = formats.load_caffemodel_arrays(result.final_model)
    b = formats.load_caffemodel_arrays(torch_run.final_model)
    init = formats.load_caffemodel_arrays(setup("unused").weights)
    for name in b:
        for x, y in zip(a[name], b[name]):
            np.testing.assert_allclose(x, y, atol=1e-4 * max(1.0, float(np.abs(y).max())))
    assert not np.array_equal(a["saliency_map"][0], init["saliency_map"][0])  # Caffe's solver moved it
    assert torch.isfinite(torch.from_numpy(a["saliency_map"][0])).all()


def test_bf16_autocast_steps_run(setup):
    """The GPU option, exercised with CPU autocast: finite losses, weights move."""
    result = train(setup("bf16", max_iter=3, precision="bf16"), progress=False, log=lambda m: None)
    assert result.iterations == 3 and np.isfinite(result.train_loss)


def test_bad_data_leaves_no_output_folder(tmp_path, setup):
    cfg = setup("never")
    cfg.data = str(tmp_path / "nonexist")
    with pytest.raises(DataError):
        Trainer(cfg, log=lambda m: None)
    assert not (tmp_path / "never").exists()
    bad = make_data(tmp_path / "bad", n=3)
    (bad / "maps" / "im0.png").unlink()
    cfg.data = str(bad)
    assert main(["train", "--data", cfg.data, "--out", cfg.out, "--solver", cfg.solver, "-q"]) == 1
    assert not (tmp_path / "never").exists()


def press_ctrl_c() -> None:
    """What Python does on Ctrl-C: the SIGINT handler in place runs in the main
    thread. Called directly rather than sent with os.kill, so the signal cannot
    land on a thread of a native library loaded by earlier tests in this process."""
    import signal
    handler = signal.getsignal(signal.SIGINT)
    assert callable(handler), "training installs its own SIGINT handler"
    handler(signal.SIGINT, None)


def test_ctrl_c_snapshots_without_validation_and_exits_130(setup, tmp_path, monkeypatch):
    from salicon import train as train_module
    cfg = setup("interrupted")
    validations = []
    original_step = train_module._TorchBackend.step

    def step(self, feeds, read=True):
        loss = original_step(self, feeds, read)
        if self.iter == 2:
            press_ctrl_c()  # the user presses Ctrl-C during step 2
        return loss
    monkeypatch.setattr(train_module._TorchBackend, "step", step)
    original_validate = train_module.Trainer.validate
    monkeypatch.setattr(train_module.Trainer, "validate",
                        lambda self, s: validations.append(1) or original_validate(self, s))
    code = main(["train", "--data", cfg.data, "--out", cfg.out, "--solver", cfg.solver, "--weights", cfg.weights,
                 "--max-iter", "50", "--device", "cpu", "--test", "1", "-q"])
    assert code == 130
    assert (tmp_path / "interrupted" / "salicon_iter_2.caffemodel").exists()
    assert not validations
    end = json.loads((tmp_path / "interrupted" / "log.jsonl").read_text().splitlines()[-1])
    assert end["reason"] == "interrupted" and end["iter"] == 2


def test_second_ctrl_c_stops_at_once(setup, tmp_path, monkeypatch):
    from salicon import train as train_module
    cfg = setup("twice", snapshot=1)
    original_step = train_module._TorchBackend.step

    def step(self, feeds, read=True):
        loss = original_step(self, feeds, read)
        if self.iter == 2:
            press_ctrl_c()
            press_ctrl_c()  # impatient: a second Ctrl-C before the step ends
        return loss
    monkeypatch.setattr(train_module._TorchBackend, "step", step)
    code = main(["train", "--data", cfg.data, "--out", cfg.out, "--solver", cfg.solver, "--weights", cfg.weights,
                 "--max-iter", "50", "--device", "cpu", "--test", "1", "-q"])
    assert code == 130
    snapshot = tmp_path / "twice" / "salicon_iter_1.caffemodel"  # the last snapshot stays valid
    Net(cfg_prototxt(cfg), phase="train").copy_from(snapshot, strict=True)
    assert not (tmp_path / "twice" / "salicon_iter_2.caffemodel").exists()


def cfg_prototxt(cfg) -> str:
    return formats.read_solver_prototxt(cfg.solver).net


def test_progress_bar_postfix_is_updated_every_step(setup, monkeypatch):
    import tqdm
    seen = []
    original = tqdm.tqdm.set_postfix

    def record(self, *args, **kwargs):
        seen.append(kwargs.get("left"))
        return original(self, *args, **kwargs)
    monkeypatch.setattr(tqdm.tqdm, "set_postfix", record)
    train(setup("bar", max_iter=5), progress=True, log=lambda m: None)  # display: 2 in the solver
    assert len(seen) == 5 and all(seen)


def test_multi_tensor_update_trains_the_same_weights_and_logs_the_same_losses(setup):
    a = train(setup("per_blob", max_iter=9, snapshot=4), progress=False, log=lambda m: None)
    b = train(setup("multi", max_iter=9, snapshot=4, update="multi-tensor"), progress=False, log=lambda m: None)
    for run in (a, b):  # snapshots at 4 and 8 and the end
        assert sorted(p.name for p in run.final_model.parent.glob("*.caffemodel")) == [
            f"salicon_iter_{i}.caffemodel" for i in (4, 8, 9)]
    x, y = formats.load_caffemodel_arrays(a.final_model), formats.load_caffemodel_arrays(b.final_model)
    for name in x:
        for u, v in zip(x[name], y[name]):
            np.testing.assert_array_equal(u, v)
    trains = [[(r["iter"], r["loss"]) for r in run.history if r["event"] == "train"] for run in (a, b)]
    assert trains[0] == trains[1] and len(trains[0]) >= 3
    assert a.train_loss == b.train_loss


def test_multi_tensor_update_stops_at_the_first_non_finite_loss(setup):
    errors = []
    for name, update in (("nan_a", "per-blob"), ("nan_b", "multi-tensor")):
        with pytest.raises(TrainingError, match="non-finite loss") as err:
            train(setup(name, lr=1e12, max_iter=50, update=update), progress=False, log=lambda m: None)
        errors.append(err.value.args[0])
    model = errors[1].rsplit(" ", 1)[-1]
    assert errors[0].replace("nan_a", "nan_b") == errors[1]  # same iteration, same message
    for blobs in formats.load_caffemodel_arrays(model).values():
        for b in blobs:
            assert np.isfinite(b).all()


def test_unknown_update_is_refused(setup):
    with pytest.raises(TrainingError, match="update must be one of per-blob, multi-tensor"):
        Trainer(setup("bad_update", update="fused"), log=lambda m: None)


def test_log_header_and_snapshot_records_say_which_python_layer_files_ran(setup):
    result = train(setup("layers", max_iter=2, snapshot=1, python_layers="as-written"), progress=False,
                   log=lambda m: None)
    out = result.final_model.parent
    header = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert header["event"] == "start" and header["iter"] == 0
    interp = header["python_layers"]["custom_interpolation_layer"]
    assert interp["implementation"] == "as-written" and interp["file"].endswith("custom_interpolation_layer.py")
    assert set(header["python_layers"]) == {"FineCustomData", "CoarseCustomData", "GroundTruthCustomData",
                                            "custom_interpolation_layer"}
    for it in (1, 2):
        record = json.loads((out / f"salicon_iter_{it}.json").read_text())
        assert record["weights"]["file"] == f"salicon_iter_{it}.caffemodel"
        assert record["training"]["iter"] == it
        assert record["training"]["python_layers"] == header["python_layers"]
    # a snapshot's record checks its weights file when the model is loaded
    from salicon import pretrained
    assert pretrained.read_record(out / "salicon_iter_2.caffemodel").sha256 == record["weights"]["sha256"]
    native = train(setup("native", max_iter=1), progress=False, log=lambda m: None)
    header = json.loads((native.final_model.parent / "log.jsonl").read_text().splitlines()[0])
    assert header["python_layers"]["custom_interpolation_layer"]["implementation"] == "native:BilinearInterpolation"


def test_weights_may_be_a_registered_models_name(tmp_path, small_train_prototxt):
    from salicon.pretrained import default_model_path
    data = make_data(tmp_path / "named_data", n=2)
    solver = tmp_path / "solver.prototxt"
    solver.write_text(SOLVER.format(net=small_train_prototxt, lr=1e-3, snapshot=0))
    trainer = Trainer(TrainConfig(data=str(data), out=str(tmp_path / "named"), solver=str(solver),
                                  weights="salicon_osie", device="cpu", test=1, seed=3), log=lambda m: None)
    assert trainer.weights == str(default_model_path())
    shipped, _ = formats.read_weights(default_model_path())
    np.testing.assert_array_equal(trainer.net.params["conv1_1"][0].detach().numpy(),
                                  np.asarray(shipped["conv1_1"][0], np.float32))
    with pytest.raises(Exception, match="no such registered model"):
        Trainer(TrainConfig(data=str(data), out=str(tmp_path / "typo"), solver=str(solver), weights="salicon_osei",
                            device="cpu"), log=lambda m: None)


def frozen_prototxt(path, source, frozen=("conv1", "conv2", "conv3", "conv4")):
    """``source`` with lr_mult 0 on the conv layers of the named blocks in both
    streams, 1 on the others."""
    from google.protobuf import text_format
    net = formats.read_net_prototxt(source)
    for lp in net.layer:
        for spec in lp.param:
            spec.lr_mult = 0 if lp.name.removeprefix("sec_").startswith(frozen) else 1
    path.write_text(text_format.MessageToString(net))
    return path


def test_cache_frozen_gives_the_same_weights_losses_and_validation(setup, tmp_path, tiny_train_prototxt):
    net_path = frozen_prototxt(tmp_path / "frozen.prototxt", tiny_train_prototxt)
    said = []
    runs = [train(setup(f"run{cache}", max_iter=9, prototxt=str(net_path), cache_frozen=cache),
                  progress=False, log=said.append) for cache in (False, True)]
    assert any("cache_frozen: 48 layers up to sec_pool4 run once per image; keeping pool4, sec_pool4" in m
               for m in said), said
    a, b = (formats.load_caffemodel_arrays(r.final_model) for r in runs)
    for name in a:
        for x, y in zip(a[name], b[name]):
            np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a["conv5_3"][0], formats.load_caffemodel_arrays(
        setup("x").weights)["conv5_3"][0])  # it learned
    np.testing.assert_array_equal(a["conv4_3"][0], formats.load_caffemodel_arrays(setup("x").weights)["conv4_3"][0])
    logs = [[{k: v for k, v in r.items() if k not in ("time", "img_per_s")} for r in run.history] for run in runs]
    assert logs[0] == logs[1] and any(r["event"] == "epoch" for r in logs[0])
    assert runs[0].val_metrics == runs[1].val_metrics


def test_cache_frozen_with_nothing_frozen_says_so(setup, tmp_path, tiny_train_prototxt):
    net_path = frozen_prototxt(tmp_path / "learning.prototxt", tiny_train_prototxt, frozen=())
    said = []
    train(setup("all", max_iter=1, prototxt=str(net_path), cache_frozen=True), progress=False, log=said.append)
    assert any("nothing to compute once" in m for m in said)


def test_constant_prefix_stops_at_learning_random_and_in_place_layers(tmp_path):
    from salicon.engine import Net
    text = """
input: "data" input_shape { dim: 1 dim: 1 dim: 4 dim: 4 }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1" param { lr_mult: 0 } param { lr_mult: 0 }
        convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "r1" type: "ReLU" bottom: "c1" top: "c1" }
layer { name: "drop" type: "Dropout" bottom: "c1" top: "d1" }
layer { name: "c2" type: "Convolution" bottom: "c1" top: "c2" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "r2" type: "ReLU" bottom: "c2" top: "c2" }
layer { name: "c3" type: "Convolution" bottom: "data" top: "c3" param { lr_mult: 0 } param { lr_mult: 0 }
        convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "cat" type: "Concat" bottom: "c2" bottom: "c3" bottom: "d1" top: "cat" }
"""
    path = tmp_path / "n.prototxt"
    path.write_text(text)
    train_net, test_net = Net(path, phase="train"), Net(path, phase="test")
    prefix = train_net.constant_prefix()
    assert sorted(train_net.step_names[i] for i in prefix.steps) == ["c1", "c3", "r1"]
    assert prefix.boundary == ("c1", "c3")
    assert sorted(test_net.step_names[i] for i in test_net.constant_prefix().steps) == ["c1", "c3", "drop", "r1"]
    x = torch.randn(1, 1, 4, 4)
    randomise(test_net)
    full = test_net(data=x)
    kept = test_net.forward_prefix(test_net.constant_prefix(), data=x)
    again = test_net(prefix=test_net.constant_prefix(), **kept)
    torch.testing.assert_close(again["cat"], full["cat"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="boundary blobs"):
        test_net(prefix=test_net.constant_prefix(), data=x)


def test_the_fast_models_training_command_runs_on_a_small_copy_of_its_net(tmp_path):
    """The model card's recipe (salicon_osie_fast): its train net at 64x64 / 32x32,
    from salicon_osie's weights, bf16, --cache-frozen, a few steps, a snapshot
    whose record names the net."""
    from salicon.pretrained import PROJECT_ROOT

    from .conftest import edit_prototxt
    text = (PROJECT_ROOT / "prototxt" / "finetune_salicon_fast.prototxt").read_text()
    net = tmp_path / "finetune_fast_small.prototxt"
    net.write_text(edit_prototxt(text, {"1,3,600,800": "1,3,64,64", "1,3,300,400": "1,3,32,32",
                                        "1,1,38,50": "1,1,4,4", "1,512,38,50": "1,512,4,4"}))
    data = make_data(tmp_path / "data", n=4)
    record = json.loads((PROJECT_ROOT / "models" / "salicon_osie_fast" / "salicon_model_osie_fast" /
                         "salicon_osie_fast.json").read_text())
    recipe = record["training"]["recipe"].split()
    assert recipe[:2] == ["salicon", "train"] and "--cache-frozen" in recipe
    args = recipe[2:]
    swap = {"--data": str(data), "--split": None, "--prototxt": str(net), "--time-limit": "10m",
            "--max-iter": "3", "--snapshot": "3", "--out": str(tmp_path / "run")}
    kept = []
    i = 0
    while i < len(args):
        flag = args[i]
        takes_value = i + 1 < len(args) and not args[i + 1].startswith("--")
        if flag in swap:
            if swap[flag] is not None:
                kept += [flag, swap[flag]]
        else:
            kept += args[i:i + 2] if takes_value else [flag]
        i += 2 if takes_value else 1
    assert main(["train", *kept, "--test", "1"]) == 0
    snapshot = json.loads((tmp_path / "run" / "salicon_iter_3.json").read_text())
    assert snapshot["training"]["net"] == str(net) and snapshot["training"]["iter"] == 3
    trained = formats.load_caffemodel_arrays(tmp_path / "run" / "salicon_iter_3.caffemodel")
    shipped, _ = formats.read_weights(PROJECT_ROOT / "models" / "salicon_osie.safetensors")
    np.testing.assert_array_equal(trained["conv4_3"][0], np.asarray(shipped["conv4_3"][0], np.float32))  # frozen
    assert not np.array_equal(trained["saliency_map"][0], np.asarray(shipped["saliency_map"][0], np.float32))
