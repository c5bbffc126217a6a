import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nbhelpers.train.checkpoint import load_checkpoint, load_model_weights
from nbhelpers.train.engine import (
    NonFiniteLossError,
    TrainSpec,
    batch_size,
    enable_gradient_checkpointing,
    fit,
    param_groups,
    resolve_mixed_precision,
)
from nbhelpers.train.identity import RunMismatchError
from nbhelpers.train.resume import TRAJECTORY_FIELDS, check_spec_unchanged
from nbhelpers.train.run_dir import list_checkpoints, read_json
from nbhelpers.train.schedule import warmup_cosine

TRUE_W = torch.tensor([1.5, -2.0, 0.5, 3.0])


class Regressor(nn.Module):
    """A two-layer regressor with dropout (so resumption must restore the torch RNG) and a buffer."""

    def __init__(self, dropout=0.2):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 1))
        self.register_buffer("seen", torch.zeros(()))

    def forward(self, x):
        return self.net(x).squeeze(-1)


def step_fn(model, batch):
    x, y = batch
    pred = model(x)
    return F.mse_loss(pred, y), {"mae": (pred - y).abs().mean().item()}


def stream(seed, batch=8, split=1):
    """The recipe contract: epoch ``e``'s batches depend on (seed, e) only. ``split`` halves each batch."""

    def batches(epoch):
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        while True:
            x = torch.randn(batch, 4, generator=g)
            y = x @ TRUE_W + 0.1 * torch.randn(batch, generator=g)
            for part in range(split):
                rows = slice(part * batch // split, (part + 1) * batch // split)
                yield x[rows], y[rows]

    return batches


def spec(tmp_path, name, **kw):
    base = dict(epochs=3, steps_per_epoch=10, lr=1e-2, weight_decay=0.01, progress=False, log_every=5)
    base.update(kw)
    return TrainSpec(run_dir=tmp_path / name, **base)


def make_model(seed, dropout=0.2):
    torch.manual_seed(seed)
    return Regressor(dropout)


def test_tiny_regression_trains_and_writes_the_run_dir(tmp_path):
    s = spec(tmp_path, "run", lr=5e-2, warmup_steps=3)
    history = fit(make_model(0), step_fn, stream(0), s, config={"recipe": "toy", "data": tmp_path})
    losses = [e["loss"] for e in history["epochs"]]
    assert losses[-1] < 0.2 * losses[0]
    assert read_json(s.run_dir / "history.json") == json.loads(json.dumps(history))
    assert [e["epoch"] for e in history["epochs"]] == [1, 2, 3]
    for e in history["epochs"]:
        assert {"loss", "lr", "mae", "seconds", "samples_per_s", "global_step"} <= set(e)
        # lr is the rate of the epoch's last step (step index global_step - 1)
        assert e["lr"] == pytest.approx(5e-2 * warmup_cosine(e["global_step"] - 1, 3, 30))
    assert [st["step"] for st in history["steps"]] == [5, 10, 15, 20, 25, 30]
    assert read_json(s.run_dir / "config.json") == {"recipe": "toy", "data": str(tmp_path)}
    assert [e for e, _ in list_checkpoints(s.run_dir)] == [1, 2, 3]
    assert read_json(s.run_dir / "checkpoints" / "latest.json")["file"] == "epoch_0003.pt"
    assert not [p for p in s.run_dir.rglob("*") if p.name.endswith(".tmp")]


def test_accumulation_of_half_batches_equals_full_batches(tmp_path):
    steps = []
    common = dict(epochs=2, steps_per_epoch=6, warmup_steps=2, max_grad_norm=0.5, log_every=1)
    full = make_model(1, dropout=0.0)
    fit(full, step_fn, stream(3, batch=8), spec(tmp_path, "full", **common))
    accum = make_model(1, dropout=0.0)
    history = fit(
        accum,
        step_fn,
        stream(3, batch=8, split=2),
        spec(tmp_path, "accum", grad_accum_steps=2, **common),
        on_step_end=lambda model, step, total: steps.append((step, total)),
    )
    assert steps == [(i, 12) for i in range(1, 13)]
    assert [st["step"] for st in history["steps"]] == list(range(1, 13))
    for (name, a), b in zip(full.state_dict().items(), accum.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)
    assert history["epochs"][0]["grad_norm"] > 0.5  # clipping was active


def final_state(run_dir):
    return load_checkpoint(list_checkpoints(run_dir)[-1][1])


class Crash(Exception):
    pass


def test_resume_after_crash_ends_with_identical_weights_and_optimizer(tmp_path):
    common = dict(epochs=4, steps_per_epoch=5, warmup_steps=3, max_grad_norm=1.0)
    whole = make_model(0)
    fit(whole, step_fn, stream(7), spec(tmp_path, "whole", **common))

    def crash(model, step, total):
        if step == 12:  # mid epoch 3: that epoch's partial progress must be thrown away
            raise Crash

    s = spec(tmp_path, "resumed", **common)
    with pytest.raises(Crash):
        fit(make_model(0), step_fn, stream(7), s, on_step_end=crash)
    assert [e for e, _ in list_checkpoints(s.run_dir)] == [1, 2]
    resumed = make_model(99)  # a different init: everything must come from the checkpoint
    history = fit(resumed, step_fn, stream(7), s)

    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    a, b = final_state(tmp_path / "whole"), final_state(s.run_dir)
    assert a["global_step"] == b["global_step"] == 20
    assert a["scheduler"] == b["scheduler"]
    for pid, st in a["optimizer"]["state"].items():
        for key, value in st.items():
            assert torch.equal(value, b["optimizer"]["state"][pid][key]), (pid, key)
    keys = ("epoch", "global_step", "loss", "lr", "mae", "grad_norm")
    whole_hist = read_json(tmp_path / "whole" / "history.json")
    assert [[e[k] for k in keys] for e in history["epochs"]] == [
        [e[k] for k in keys] for e in whole_hist["epochs"]
    ]


def test_finished_run_resumes_without_training(tmp_path):
    s = spec(tmp_path, "done", epochs=1, steps_per_epoch=3)
    first = fit(make_model(0), step_fn, stream(0), s)

    def never(model, batch):
        raise AssertionError("a finished run must not train again")

    model = make_model(5)
    assert fit(model, never, stream(0), s) == first
    load_model_weights(reference := make_model(6), s.run_dir)
    assert torch.equal(model.net[0].weight, reference.net[0].weight)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    def nan_in_epoch_2(model, batch):
        loss, logs = step_fn(model, batch)
        return (loss * float("nan") if model.seen >= 13 else loss), logs

    def count(model, step, total):
        model.seen += 1

    s = spec(tmp_path, "nan", epochs=3, steps_per_epoch=10)
    with pytest.raises(NonFiniteLossError, match="epoch 2, optimiser step 14.*epoch_0001.pt") as err:
        fit(make_model(0), nan_in_epoch_2, stream(0), s, on_step_end=count)
    assert (err.value.epoch, err.value.step) == (2, 14)
    assert err.value.last_checkpoint == s.run_dir / "checkpoints" / "epoch_0001.pt"
    assert [e for e, _ in list_checkpoints(s.run_dir)] == [1]
    model = make_model(1)
    load_model_weights(model, s.run_dir)
    assert all(torch.isfinite(t).all() for t in model.state_dict().values())
    assert len(read_json(s.run_dir / "history.json")["epochs"]) == 1


def test_non_finite_buffer_is_never_checkpointed(tmp_path):
    def poison(model, step, total):
        if step == 7:  # epoch 2 of 5-step epochs; the buffer is not in the loss
            model.seen.fill_(float("inf"))

    s = spec(tmp_path, "inf", epochs=3, steps_per_epoch=5)
    with pytest.raises(NonFiniteLossError, match="weight or buffer") as err:
        fit(make_model(0), step_fn, stream(0), s, on_step_end=poison)
    assert err.value.epoch == 2
    assert [e for e, _ in list_checkpoints(s.run_dir)] == [1]


def test_checkpoint_every_keep_last_and_evaluate(tmp_path):
    seen = []

    def evaluate(model, epoch):
        seen.append((epoch, model.training))
        return {"val_mse": 0.5 * epoch, "loss": -1.0}

    s = spec(tmp_path, "ev", epochs=5, steps_per_epoch=2, checkpoint_every=2, keep_last=2)
    history = fit(make_model(0), step_fn, stream(0), s, evaluate=evaluate)
    assert seen == [(e, False) for e in range(1, 6)]
    assert [e for e, _ in list_checkpoints(s.run_dir)] == [4, 5]  # 2 pruned; 5 is the final one
    assert history["epochs"][2]["val_mse"] == 1.5
    assert history["epochs"][2]["eval_loss"] == -1.0 and history["epochs"][2]["loss"] > 0


def test_resume_false_refuses_to_mix_runs(tmp_path):
    s = spec(tmp_path, "x", epochs=1, steps_per_epoch=2)
    fit(make_model(0), step_fn, stream(0), s)
    with pytest.raises(FileExistsError, match="resume=False"):
        fit(make_model(0), step_fn, stream(0), spec(tmp_path, "x", epochs=1, steps_per_epoch=2, resume=False))


def test_short_stream_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="yielded 3 micro-batches.*needs .* = 8"):
        batches = stream(0)
        fit(
            make_model(0),
            step_fn,
            lambda e: [b for _, b in zip(range(3), batches(e), strict=False)],
            spec(tmp_path, "short", steps_per_epoch=4, grad_accum_steps=2),
        )


def test_bf16_then_fp32_in_one_process(tmp_path):
    # A notebook kernel trains several models; accelerate's singleton must not pin the first precision.
    bf16_model = make_model(0)
    h = fit(bf16_model, step_fn, stream(0), spec(tmp_path, "bf16", epochs=1, mixed_precision="bf16"))
    assert torch.isfinite(torch.tensor(h["epochs"][0]["loss"]))
    # accelerate's autocast patch of forward is undone: the model runs in full precision afterwards.
    assert "_original_forward" not in bf16_model.__dict__
    assert "forward" not in bf16_model.__dict__
    model = make_model(0)
    fit(model, step_fn, stream(0), spec(tmp_path, "fp32", epochs=1, mixed_precision="no"))
    assert read_json(tmp_path / "fp32" / "history.json")["epochs"][0]["loss"] > 0


def test_spec_validation_names_the_field(tmp_path):
    with pytest.raises(ValueError, match="steps_per_epoch"):
        TrainSpec(run_dir=tmp_path, epochs=1, steps_per_epoch=0, lr=1e-3)
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainSpec(run_dir=tmp_path, epochs=1, steps_per_epoch=5, lr=1e-3, warmup_steps=6)
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainSpec(run_dir=tmp_path, epochs=1, steps_per_epoch=5, lr=1e-3, mixed_precision="fp8")


@pytest.mark.parametrize(
    ("cuda", "bf16", "expected"), [(False, False, "no"), (True, False, "fp16"), (True, True, "bf16")]
)
def test_auto_precision_picks_fp16_on_a_t4(monkeypatch, cuda, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    # A T4 emulates bf16: only native support counts.
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16 or including_emulation
    )
    assert resolve_mixed_precision("auto") == expected
    assert resolve_mixed_precision("fp16") == "fp16"


def test_param_groups_exempt_biases_norms_and_logit_scale():
    class Clipish(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 3)
            self.ln = nn.LayerNorm(3)
            self.logit_scale = nn.Parameter(torch.tensor(2.6))
            self.frozen = nn.Linear(3, 3)
            self.frozen.requires_grad_(False)

    m = Clipish()
    decay, rest = param_groups(m, None, 0.1)
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    assert [id(p) for p in decay["params"]] == [id(m.proj.weight)]
    assert {id(p) for p in rest["params"]} == {
        id(m.proj.bias),
        id(m.ln.weight),
        id(m.ln.bias),
        id(m.logit_scale),
    }
    only = param_groups(m, [m.frozen.weight, m.frozen.weight, m.ln.bias], 0.1)
    assert [len(g["params"]) for g in only] == [1, 1]
    with pytest.raises(ValueError, match="no parameters"):
        param_groups(nn.Linear(2, 2).requires_grad_(False), None, 0.1)


def test_gradient_checkpointing_switches_outermost_modules():
    class Tower(nn.Module):
        def __init__(self):
            super().__init__()
            self.on = False
            self.inner = nn.Linear(2, 2)

        def set_grad_checkpointing(self, enable=True):
            self.on = enable

    class HF(nn.Module):
        def __init__(self):
            super().__init__()
            self.on = False

        def gradient_checkpointing_enable(self):
            self.on = True

    wrapper = nn.ModuleDict({"student": Tower(), "text": HF(), "head": nn.Linear(2, 2)})
    assert enable_gradient_checkpointing(wrapper) == 2
    assert wrapper["student"].on and wrapper["text"].on
    with pytest.warns(UserWarning, match="memory use is unchanged"):
        assert enable_gradient_checkpointing(nn.Linear(2, 2)) == 0


def test_batch_size_finds_the_first_tensor():
    assert batch_size({"text": ["a", "b"], "image": torch.zeros(5, 3)}) == 5
    assert batch_size((["x"], (torch.zeros(()), torch.zeros(7)))) == 7
    assert batch_size(["no", "tensors"]) is None


def test_resume_with_changed_spec_is_refused_before_anything_is_written(tmp_path):
    fit(make_model(0), step_fn, stream(0), spec(tmp_path, "w", epochs=1, steps_per_epoch=2))
    before = {p: p.read_bytes() for p in (tmp_path / "w").rglob("*") if p.is_file()}
    with pytest.raises(RunMismatchError) as caught:
        fit(make_model(0), step_fn, stream(0), spec(tmp_path, "w", epochs=2, steps_per_epoch=2, lr=5e-3))
    assert "epochs: 1 -> 2" in str(caught.value) and "lr: 0.01 -> 0.005" in str(caught.value)
    assert {p: p.read_bytes() for p in (tmp_path / "w").rglob("*") if p.is_file()} == before


def test_epoch_line_is_one_readable_summary():
    from nbhelpers.train.epoch_log import epoch_line as _epoch_line

    line = _epoch_line(
        {
            "epoch": 3,
            "global_step": 30,
            "loss": 0.634,
            "lr": 1.2e-4,
            "train_acc": 0.989,
            "seconds": 12.34,
            "samples_per_s": 412.2,
        },
        10,
    )
    assert line == "epoch 3/10 · loss 0.6340 · lr 1.2e-04 · train_acc 0.9890 · 412 samples/s · 12.3 s"


def test_progress_bar_redraws_a_bounded_number_of_times(tmp_path, monkeypatch):
    """Each redraw in a notebook is widget messages on the kernel's IOPub socket: a long run
    must not send one per step (nbval loses the messages past ZMQ's high-water mark)."""
    import tqdm.std

    from nbhelpers import progress
    from nbhelpers.train import engine

    redraws = []

    class CountingBar(tqdm.std.tqdm):
        def display(self, *args, **kwargs):
            redraws.append(self.n)
            return super().display(*args, **kwargs)

    monkeypatch.setenv("MEMELAB_PROGRESS", "widget")  # the bar a notebook shows (tqdm.auto's)
    monkeypatch.setattr(progress, "tqdm_auto", CountingBar)
    monkeypatch.setattr(engine, "PROGRESS_MIN_SECONDS", 0.0)  # only the step bound is left
    epochs, steps = 4, 150
    fit(
        make_model(0),
        step_fn,
        stream(0),
        spec(tmp_path, "bar", epochs=epochs, steps_per_epoch=steps, progress=True, log_every=1),
    )
    assert redraws[-1] == epochs * steps  # the bar reaches the end
    # <= 50 step redraws, plus one per epoch line written above the bar, plus open and close
    assert len(redraws) <= engine.PROGRESS_REDRAWS + epochs + 2
    assert len(redraws) >= engine.PROGRESS_REDRAWS // 2  # and it does move


def test_decay_all_puts_every_parameter_in_the_decayed_group():
    m = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    (decay,) = param_groups(m, None, 0.1, decay_all=True)
    assert decay["weight_decay"] == 0.1 and len(decay["params"]) == 4


def test_a_constant_schedule_holds_the_peak_rate_and_decay_all_decays_the_biases(tmp_path):
    history = fit(
        make_model(0), step_fn, stream(0),
        spec(tmp_path, "c", epochs=2, steps_per_epoch=3, lr_schedule="constant", decay_all=True, weight_decay=0.5),
    )  # fmt: skip
    cosine = fit(make_model(0), step_fn, stream(0), spec(tmp_path, "k", epochs=2, steps_per_epoch=3))
    assert [e["lr"] for e in history["epochs"]] == pytest.approx([1e-2, 1e-2])
    assert cosine["epochs"][-1]["lr"] < 1e-2
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        spec(tmp_path, "x", epochs=1, steps_per_epoch=1, lr_schedule="linear")


def test_a_checkpoint_from_before_the_schedule_fields_resumes_as_cosine(tmp_path):
    now = {"lr_schedule": "cosine", "decay_all": False, "epochs": 1}
    check_spec_unchanged({"epochs": 1}, {**dict.fromkeys(TRAJECTORY_FIELDS), **now}, tmp_path)
    with pytest.raises(RunMismatchError, match="lr_schedule: 'cosine' -> 'constant'"):
        check_spec_unchanged(
            {"epochs": 1}, {**dict.fromkeys(TRAJECTORY_FIELDS), **now, "lr_schedule": "constant"}, tmp_path
        )
