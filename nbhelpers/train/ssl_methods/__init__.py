"""Self-supervised methods, one module each (:mod:`~nbhelpers.train.ssl_methods.base` for what they share)."""

from nbhelpers.train.ssl_methods.barlow_twins import BarlowTwinsModel
from nbhelpers.train.ssl_methods.base import SSLModel
from nbhelpers.train.ssl_methods.cass import CASSModel
from nbhelpers.train.ssl_methods.dino import DINOModel
from nbhelpers.train.ssl_methods.dino_twins import DINOTwinsModel

#: ``method`` -> its training module class.
METHODS: dict[str, type[SSLModel]] = {
    "dino": DINOModel,
    "barlow_twins": BarlowTwinsModel,
    "dino_twins": DINOTwinsModel,
    "cass": CASSModel,
}
