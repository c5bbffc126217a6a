"""Losses, one per module: functions (or small modules holding only loss state) of tensors.

A loss knows nothing of models, training or data; the recipes in ``nbhelpers.train`` wire them up.
Under several processes every loss is that of the global batch (:mod:`nbhelpers.losses.distributed`).
"""

from nbhelpers.losses.barlow_twins import BarlowTwinsLoss, barlow_twins_loss, batch_standardise
from nbhelpers.losses.cass import CASSLoss, cass_loss
from nbhelpers.losses.cass_mm import cass_mm_loss
from nbhelpers.losses.clip import masked_clip_loss
from nbhelpers.losses.dino import DINOLoss, cosine_momentum, ema_update_
from nbhelpers.losses.dino_twins import DINOTwinsLoss
from nbhelpers.losses.distributed import all_gather_rows, all_reduce_sum, global_mean, global_rows

__all__ = [
    "BarlowTwinsLoss",
    "CASSLoss",
    "DINOLoss",
    "DINOTwinsLoss",
    "all_gather_rows",
    "all_reduce_sum",
    "barlow_twins_loss",
    "batch_standardise",
    "cass_loss",
    "cass_mm_loss",
    "cosine_momentum",
    "ema_update_",
    "global_mean",
    "global_rows",
    "masked_clip_loss",
]
