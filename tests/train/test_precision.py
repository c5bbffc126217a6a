"""Precision per ``fit``: several precisions in one process, Accelerate's own AMP under a launcher."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from torch import nn

from nbhelpers.train import engine, precision
from nbhelpers.train.engine import fit
from nbhelpers.train.precision import Precision, make_accelerator
from tests.train.test_engine import make_model, spec, step_fn, stream


def recording(dtypes):
    """``step_fn`` that notes the dtype the forward ran in (autocast on or off)."""

    def step(model, batch):
        x, _ = batch
        dtypes.add(model.net[0](x).dtype)
        return step_fn(model, batch)

    return step


@pytest.mark.parametrize("order", [("no", "bf16", "no"), ("bf16", "no", "bf16")])
def test_fits_of_different_precisions_in_one_process(tmp_path, order):
    # A notebook kernel trains several models; the process-wide AcceleratorState must not pin the first
    # precision, and nothing private resets it: it stays "no" and each fit autocasts itself.
    expected = {"no": torch.float32, "bf16": torch.bfloat16}
    for i, mode in enumerate(order):
        dtypes = set()
        model = make_model(0)
        history = fit(
            model, recording(dtypes), stream(0), spec(tmp_path, f"{i}_{mode}", epochs=1, mixed_precision=mode)
        )
        assert dtypes == {expected[mode]}
        assert torch.isfinite(torch.tensor(history["epochs"][0]["loss"]))
        assert AcceleratorState().mixed_precision == "no"
        assert model(torch.zeros(2, 4)).dtype == torch.float32  # no autocast left on the model
        assert "forward" not in model.__dict__


def test_under_a_launcher_accelerate_does_amp_and_keeps_its_one_precision(tmp_path, monkeypatch):
    # As before the per-fit design: several launched processes share the launcher's state, so the
    # accelerator is created with the run's precision and a second precision is Accelerate's error.
    monkeypatch.setattr(precision, "launched_with_several_processes", lambda: True)
    accelerator, amp = make_accelerator("no", 1)
    assert not amp.own and amp.scaler is accelerator.scaler
    fit(make_model(0), step_fn, stream(0), spec(tmp_path, "launched", epochs=1, mixed_precision="no"))
    with pytest.raises(ValueError, match="AcceleratorState has already been initialized"):
        fit(make_model(0), step_fn, stream(0), spec(tmp_path, "other", epochs=1, mixed_precision="bf16"))


#: Two launched CPU processes: fit under "no" twice, then under "bf16", which Accelerate refuses.
LAUNCHED_FITS = """
import sys
from pathlib import Path
import pytest
from nbhelpers.train.engine import fit
from nbhelpers.train.precision import launched_with_several_processes, make_accelerator
from tests.train.test_engine import make_model, spec, step_fn, stream

tmp = Path(sys.argv[1])
assert launched_with_several_processes() and not make_accelerator("no", 1)[1].own
for name in ("first", "second"):
    fit(make_model(0), step_fn, stream(0), spec(tmp, name, epochs=1, mixed_precision="no"))
with pytest.raises(ValueError, match="AcceleratorState has already been initialized"):
    fit(make_model(0), step_fn, stream(0), spec(tmp, "bf16", epochs=1, mixed_precision="bf16"))
print("launched fits as before")
"""


@pytest.mark.slow
def test_launched_processes_keep_the_launchers_one_precision(tmp_path):
    # Two CPU processes under torchrun, Accelerate's multi-CPU launch (``accelerate launch --cpu`` starts
    # only one process unless mpirun is configured).
    script = tmp_path / "fits.py"
    script.write_text(LAUNCHED_FITS)
    repo = Path(__file__).resolve().parents[2]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    proc = subprocess.run(
        [*launch, str(script), str(tmp_path)], cwd=repo, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert proc.stdout.count("launched fits as before") == 2


def test_own_fp16_loss_scaling_steps_like_full_precision():
    # Accelerate scales fp16 losses only off the CPU; the scaler's arithmetic is checked here on the CPU.
    def one_step(scaled):
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
        accelerator, amp = make_accelerator("fp16" if scaled else "no", 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        model, optimizer = accelerator.prepare(model, optimizer)
        if scaled:
            assert amp.scaler is None  # on a CPU fp16 is full precision, as in Accelerate
            amp._own_scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        loss = model(torch.ones(2, 4)).pow(2).mean()
        amp.backward(loss)
        norm = amp.clip(model.parameters(), optimizer, 0.5)
        amp.step(optimizer)
        return norm, [p.detach().clone() for p in model.parameters()]

    norm, params = one_step(scaled=True)
    reference_norm, reference = one_step(scaled=False)
    assert norm == reference_norm
    for a, b in zip(params, reference, strict=True):
        assert torch.equal(a, b)


def test_accelerate_precision_is_used_when_it_owns_amp():
    accelerator = Accelerator(mixed_precision="no")
    amp = Precision(accelerator, "no", own=False)
    assert amp.scaler is None
    with amp.autocast():
        assert not torch.is_autocast_enabled("cpu")


def test_fp16_through_fit_skips_an_overflowing_step_halves_the_scale_and_trains_on(tmp_path, monkeypatch):
    # A T4 resolves mixed_precision to fp16: autocast to fp16 and a GradScaler. A CPU runs fp16 at full
    # precision (Accelerate's rule), so that rule is lifted here to run the GPU's path through the real fit.
    monkeypatch.setattr(precision, "FP16_FULL_PRECISION_DEVICES", frozenset())
    made = []

    def recording_make_accelerator(mode, grad_accum_steps):
        accelerator, amp = make_accelerator(mode, grad_accum_steps)
        made.append(amp)
        return accelerator, amp

    monkeypatch.setattr(engine, "make_accelerator", recording_make_accelerator)
    model = make_model(0, dropout=0.0)
    steps, poisoned, calls, dtypes = 12, 8, [0], set()
    # The gradient of one weight is made infinite at the 8th optimiser step only (one micro-batch a step),
    # as an fp16 overflow would make it.
    model.net[0].weight.register_hook(
        lambda grad: torch.full_like(grad, float("inf")) if calls[0] == poisoned else None
    )

    def step(m, batch):
        calls[0] += 1
        dtypes.add(m.net[0](batch[0]).dtype)
        return step_fn(m, batch)

    weights = [{k: v.clone() for k, v in model.state_dict().items()}]
    scales = [torch.amp.GradScaler("cpu").get_scale()]  # the scaler's initial scale, 2**16

    def after_step(m, global_step, total):
        weights.append({k: v.detach().clone() for k, v in m.state_dict().items()})
        scales.append(made[0].scaler.get_scale())

    s = spec(
        tmp_path,
        "fp16",
        epochs=2,
        steps_per_epoch=steps // 2,
        mixed_precision="fp16",
        lr=5e-2,
        max_grad_norm=1.0,
    )
    history = fit(model, step, stream(0), s, on_step_end=after_step)

    assert isinstance(made[0].scaler, torch.amp.GradScaler) and dtypes == {torch.float16}
    assert len(weights) == len(scales) == steps + 1 and calls[0] == steps

    def changed(i):  # did optimiser step i (from 1) change any weight?
        return any(not torch.equal(weights[i][k], weights[i - 1][k]) for k in weights[i] if k != "seen")

    # A step is skipped exactly when its gradients overflowed, and then the scale is halved. (The first
    # steps overflow of themselves: 2**16 is too large a scale for this model, as the scaler expects.)
    for i in range(1, steps + 1):
        assert scales[i] == (scales[i - 1] if changed(i) else scales[i - 1] / 2), f"step {i}"
    # (a) the poisoned step is skipped, weights and all, after a step that was not
    assert changed(poisoned - 1) and not changed(poisoned)
    # (b) every later step updates, and the run stays finite
    assert all(changed(i) for i in range(poisoned + 1, steps + 1))
    assert all(torch.isfinite(v).all() for v in weights[-1].values())
    # the history counts the skipped steps, and the mean gradient norm is over the steps taken
    half = steps // 2
    skipped = [sum(not changed(i) for i in range(1 + e * half, 1 + (e + 1) * half)) for e in range(2)]
    assert [e.get("skipped_steps", 0) for e in history["epochs"]] == skipped and skipped[1] == 1
    for key in ("loss", "grad_norm"):
        assert all(math.isfinite(e[key]) for e in history["epochs"] + history["steps"]), key
    assert history["epochs"][1]["loss"] < history["epochs"][0]["loss"]
