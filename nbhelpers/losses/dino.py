"""DINO: self-distillation with no labels, and the momentum (EMA) teacher it trains against.

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021 (arXiv:2104.14294);
the reference implementation is facebookresearch/dino (``main_dino.py``: ``DINOLoss``, ``cosine_scheduler``).
The momentum schedule of the teacher follows BYOL (Grill et al., NeurIPS 2020, arXiv:2006.07733).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nbhelpers.losses.distributed import all_reduce_sum, global_rows


class DINOLoss(nn.Module):
    """Cross-entropy between a centred, sharpened teacher and the student, over every pair of distinct views.

    The teacher sees only the ``n_global_crops`` global crops; the student sees those and
    ``n_local_crops`` local crops. For every teacher crop ``t`` and every student crop ``s != t`` the loss
    is ``mean_batch(-sum_k P_t[k] log P_s[k])`` with ``P_t = softmax((teacher - center) / teacher_temp)``
    (no gradient) and ``P_s = softmax(student / student_temp)``; the result is the mean over those pairs.
    Pairs of the same view are skipped: predicting a crop from itself teaches nothing.

    Centring (subtracting a running mean of the teacher outputs) stops one dimension from dominating,
    and the low teacher temperature sharpens the targets; together they prevent collapse. The centre is a
    buffer, so it is saved in ``state_dict`` and resumed with a checkpoint. It is updated after each
    forward in training mode (``self.training``), so evaluating the loss in ``eval()`` mode leaves it
    untouched. Under ``torch.distributed`` the batch mean is all-reduced, as in the reference code.

    Under several processes the loss is also the global batch's (each pair's cross-entropy is summed
    over every process's samples, with gradients, before the mean), so every process logs what one
    process would. The gradients are those of the reference's per-process mean (for equal shares), so
    DDP's average is unchanged. The forward is then a collective: call it on every process.

    Args:
        out_dim: K, the number of prototypes (width of the DINO head's output).
        n_local_crops: number of local crops the student sees (0 is allowed).
        n_global_crops: number of global crops, seen by both networks (2 in the paper).
        teacher_temp: final teacher temperature (0.04 in the paper; up to 0.07 for longer runs).
        warmup_teacher_temp: teacher temperature at epoch 0.
        warmup_teacher_temp_epochs: epochs of linear warm-up from ``warmup_teacher_temp`` to
            ``teacher_temp``; 0 means no warm-up.
        student_temp: student temperature (0.1).
        center_momentum: momentum of the centre's moving average (0.9).

    Raises:
        ValueError: if a count, temperature or momentum is out of range.
    """

    center: Tensor

    def __init__(
        self,
        out_dim: int,
        n_local_crops: int,
        n_global_crops: int = 2,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 0,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
    ):
        super().__init__()
        if out_dim < 1:
            raise ValueError(f"out_dim must be >= 1, got {out_dim}")
        if n_global_crops < 1 or n_local_crops < 0:
            raise ValueError(
                f"need n_global_crops >= 1 and n_local_crops >= 0, got {n_global_crops} and {n_local_crops}"
            )
        if n_global_crops + n_local_crops < 2:
            raise ValueError("DINO needs at least two crops: with one there is no pair of distinct views")
        if min(teacher_temp, warmup_teacher_temp, student_temp) <= 0:
            raise ValueError(
                "temperatures must be > 0, got "
                f"teacher_temp={teacher_temp}, warmup_teacher_temp={warmup_teacher_temp}, "
                f"student_temp={student_temp}"
            )
        if warmup_teacher_temp_epochs < 0:
            raise ValueError(f"warmup_teacher_temp_epochs must be >= 0, got {warmup_teacher_temp_epochs}")
        if not 0.0 <= center_momentum <= 1.0:
            raise ValueError(f"center_momentum must be in [0, 1], got {center_momentum}")
        self.out_dim = out_dim
        self.n_global_crops = n_global_crops
        self.n_local_crops = n_local_crops
        self.teacher_temp = teacher_temp
        self.warmup_teacher_temp = warmup_teacher_temp
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    @property
    def n_crops(self) -> int:
        """Number of crops the student sees: global then local."""
        return self.n_global_crops + self.n_local_crops

    def teacher_temperature(self, epoch: int) -> float:
        """Teacher temperature at ``epoch``.

        Same values as the reference ``np.linspace(warmup_teacher_temp, teacher_temp, warmup_epochs)``
        followed by ``teacher_temp``: the warm-up reaches ``teacher_temp`` at epoch ``warmup_epochs - 1``.

        Raises:
            ValueError: if ``epoch`` is negative.
        """
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        n_warmup = self.warmup_teacher_temp_epochs
        if epoch >= n_warmup:
            return self.teacher_temp
        if n_warmup == 1:
            return self.warmup_teacher_temp
        return self.warmup_teacher_temp + (self.teacher_temp - self.warmup_teacher_temp) * epoch / (
            n_warmup - 1
        )

    def forward(self, student_output: Tensor, teacher_output: Tensor, epoch: int = 0) -> Tensor:
        """DINO loss of one batch; updates the centre in training mode.

        Args:
            student_output: ``(n_crops * batch, out_dim)`` head outputs, crop-major: rows
                ``[c * batch, (c + 1) * batch)`` are crop ``c``; the first ``n_global_crops`` crops are the
                global ones, in the same order as the teacher's.
            teacher_output: ``(n_global_crops * batch, out_dim)`` teacher head outputs, crop-major.
            epoch: current epoch, for the teacher temperature warm-up.

        Returns:
            Scalar tensor (float32), the loss.

        Raises:
            ValueError: if the shapes do not agree with ``out_dim`` and the crop counts.
        """
        n_rows_teacher, n_rows_student = teacher_output.shape[0], student_output.shape[0]
        if student_output.ndim != 2 or teacher_output.ndim != 2:
            raise ValueError("student_output and teacher_output must be 2-D (crops * batch, out_dim)")
        if student_output.shape[1] != self.out_dim or teacher_output.shape[1] != self.out_dim:
            raise ValueError(
                f"expected out_dim={self.out_dim} columns, got {student_output.shape[1]} (student) and "
                f"{teacher_output.shape[1]} (teacher)"
            )
        if n_rows_teacher % self.n_global_crops or n_rows_teacher == 0:
            raise ValueError(
                f"teacher rows ({n_rows_teacher}) must be a positive multiple of {self.n_global_crops}"
            )
        batch = n_rows_teacher // self.n_global_crops
        global_batch = global_rows(batch, student_output.device)
        if n_rows_student != self.n_crops * batch:
            raise ValueError(
                f"student rows ({n_rows_student}) must be n_crops * batch = {self.n_crops} * {batch}"
            )

        # Softmaxes in float32: a low temperature overflows half precision.
        student_log_p = F.log_softmax(student_output.float() / self.student_temp, dim=-1)
        student_log_p = student_log_p.view(self.n_crops, batch, self.out_dim)  # (S, B, K)
        temp = self.teacher_temperature(epoch)
        teacher_p = F.softmax((teacher_output.detach().float() - self.center) / temp, dim=-1)
        teacher_p = teacher_p.view(self.n_global_crops, batch, self.out_dim)  # (G, B, K)

        # cross_entropy[g, s] = mean over the (global) batch of -sum_k P_teacher[g] log P_student[s].
        summed = -torch.einsum("gbk,sbk->gs", teacher_p, student_log_p)  # (G, S), this process's samples
        cross_entropy = all_reduce_sum(summed) / global_batch
        # Student crop g is the same view as teacher crop g: drop those pairs.
        same_view = torch.eye(
            self.n_global_crops, self.n_crops, dtype=torch.bool, device=cross_entropy.device
        )
        n_pairs = self.n_global_crops * self.n_crops - self.n_global_crops
        loss = cross_entropy.masked_fill(same_view, 0.0).sum() / n_pairs

        if self.training:
            self.update_center(teacher_output)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_output: Tensor) -> None:
        """``center <- m * center + (1 - m) * mean_rows(teacher_output)``, all-reduced across processes.

        Args:
            teacher_output: ``(n_global_crops * batch, out_dim)`` teacher head outputs.
        """
        batch_sum = all_reduce_sum(teacher_output.detach().float().sum(dim=0, keepdim=True))  # (1, K)
        batch_center = batch_sum / global_rows(teacher_output.shape[0], teacher_output.device)
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1.0 - self.center_momentum)


def cosine_momentum(step: int, total_steps: int, base: float = 0.996, final: float = 1.0) -> float:
    """Teacher EMA momentum, raised from ``base`` to ``final`` along a half cosine (BYOL, DINO).

    ``m(step) = final - (final - base) * (1 + cos(pi * step / total_steps)) / 2``, so ``m(0) = base`` and
    ``m(total_steps) = final``.

    Args:
        step: current optimisation step, in ``[0, total_steps]``.
        total_steps: number of steps of the whole run.
        base: momentum at step 0.
        final: momentum at the last step.

    Raises:
        ValueError: if ``total_steps < 1`` or ``step`` is outside ``[0, total_steps]``.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= step <= total_steps:
        raise ValueError(f"step must be in [0, {total_steps}], got {step}")
    return final - (final - base) * (1.0 + math.cos(math.pi * step / total_steps)) / 2.0


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """In place: ``teacher_param <- momentum * teacher_param + (1 - momentum) * student_param``.

    Only parameters are averaged. Buffers (e.g. BatchNorm running statistics) are copied from the
    student, as a moving average of running averages has no meaning. ``momentum=1`` leaves the teacher
    exactly unchanged and ``momentum=0`` makes it an exact copy of the student.

    Args:
        teacher: the EMA network, updated in place.
        student: the trained network, read only; must have the same parameter and buffer names and shapes.
        momentum: in ``[0, 1]``, usually from :func:`cosine_momentum`.

    Raises:
        ValueError: if ``momentum`` is outside ``[0, 1]`` or the two networks differ in structure.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    teacher_params, student_params = dict(teacher.named_parameters()), dict(student.named_parameters())
    teacher_buffers, student_buffers = dict(teacher.named_buffers()), dict(student.named_buffers())
    if teacher_params.keys() != student_params.keys() or teacher_buffers.keys() != student_buffers.keys():
        raise ValueError("teacher and student must have the same parameter and buffer names")
    for name, t in teacher_params.items():
        s = student_params[name]
        if t.shape != s.shape:
            raise ValueError(f"shape mismatch for {name}: teacher {tuple(t.shape)}, student {tuple(s.shape)}")
        t.mul_(momentum).add_(s.detach(), alpha=1.0 - momentum)
    for name, t in teacher_buffers.items():
        t.copy_(student_buffers[name])
