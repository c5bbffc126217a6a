"""DINO-Twins: DINO self-distillation plus a Barlow Twins term on the two global views.

"DinoTwins: Combining DINO and Barlow Twins for Robust, Label-Efficient Vision Transformers", 2025
(arXiv:2508.17509), built from Caron et al. 2021 (DINO, arXiv:2104.14294) and Zbontar et al. 2021
(Barlow Twins, arXiv:2103.03230).

DINO matches distributions over prototypes across views but leaves the embedding's dimensions free to be
redundant; Barlow Twins decorrelates them, and on the two global crops it also asks for invariance
directly in embedding space. The weighted sum keeps both signals.
"""

from __future__ import annotations

from torch import Tensor, nn

from nbhelpers.losses.barlow_twins import BarlowTwinsLoss
from nbhelpers.losses.dino import DINOLoss


class DINOTwinsLoss(nn.Module):
    """``dino_weight * DINO(student, teacher) + barlow_weight * BarlowTwins(z1, z2)``.

    The Barlow Twins term grows with the embedding width (``dim`` diagonal terms and ``dim * (dim - 1)``
    off-diagonal ones) while DINO's is of the order of ``log(out_dim)``; scale ``barlow_weight`` (e.g. by
    ``1 / dim``) when the Barlow term would otherwise drown DINO's.

    Args:
        out_dim: K, the width of the DINO head's output.
        n_local_crops: number of local crops the student sees.
        n_global_crops: number of global crops (2).
        dino_weight: weight of the DINO term.
        barlow_weight: weight of the Barlow Twins term.
        lambda_offdiag: Barlow Twins' off-diagonal weight.
        teacher_temp: see :class:`~nbhelpers.losses.dino.DINOLoss`.
        warmup_teacher_temp: see :class:`~nbhelpers.losses.dino.DINOLoss`.
        warmup_teacher_temp_epochs: see :class:`~nbhelpers.losses.dino.DINOLoss`.
        student_temp: see :class:`~nbhelpers.losses.dino.DINOLoss`.
        center_momentum: see :class:`~nbhelpers.losses.dino.DINOLoss`.

    Raises:
        ValueError: if a weight is negative, or from ``DINOLoss`` / ``BarlowTwinsLoss`` for their arguments.
    """

    def __init__(
        self,
        out_dim: int,
        n_local_crops: int,
        n_global_crops: int = 2,
        dino_weight: float = 1.0,
        barlow_weight: float = 1.0,
        lambda_offdiag: float = 0.0051,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 0,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
    ):
        super().__init__()
        if dino_weight < 0 or barlow_weight < 0:
            raise ValueError(
                f"weights must be >= 0, got dino_weight={dino_weight}, barlow_weight={barlow_weight}"
            )
        self.dino_weight = dino_weight
        self.barlow_weight = barlow_weight
        # A submodule, so the DINO centre is in this module's state_dict as "dino.center".
        self.dino = DINOLoss(
            out_dim,
            n_local_crops=n_local_crops,
            n_global_crops=n_global_crops,
            teacher_temp=teacher_temp,
            warmup_teacher_temp=warmup_teacher_temp,
            warmup_teacher_temp_epochs=warmup_teacher_temp_epochs,
            student_temp=student_temp,
            center_momentum=center_momentum,
        )
        self.barlow = BarlowTwinsLoss(lambda_offdiag)

    def forward(
        self,
        student_output: Tensor,
        teacher_output: Tensor,
        z1: Tensor,
        z2: Tensor,
        epoch: int = 0,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Total loss and its unweighted parts; updates the DINO centre in training mode.

        Args:
            student_output: ``(n_crops * batch, out_dim)`` student head outputs, crop-major, global crops first.
            teacher_output: ``(n_global_crops * batch, out_dim)`` teacher head outputs, crop-major.
            z1: ``(batch, dim)`` student embeddings (backbone or projector output) of global crop 0.
            z2: ``(batch, dim)`` student embeddings of global crop 1, same samples in the same order.
            epoch: current epoch, for DINO's teacher temperature warm-up.

        Returns:
            ``(total, parts)``: ``total`` is the scalar to back-propagate; ``parts`` maps ``"dino"`` and
            ``"barlow_twins"`` to the unweighted terms, detached (for logging).

        Raises:
            ValueError: from :class:`~nbhelpers.losses.dino.DINOLoss` or
                :func:`~nbhelpers.losses.barlow_twins.barlow_twins_loss` on shape mismatches.
        """
        if z1.shape[0] * self.dino.n_global_crops != teacher_output.shape[0]:
            raise ValueError(
                f"z1 has {z1.shape[0]} rows but the teacher output holds "
                f"{teacher_output.shape[0] // self.dino.n_global_crops} samples per crop"
            )
        dino = self.dino(student_output, teacher_output, epoch)
        barlow = self.barlow(z1, z2)
        total = self.dino_weight * dino + self.barlow_weight * barlow
        return total, {"dino": dino.detach(), "barlow_twins": barlow.detach()}
