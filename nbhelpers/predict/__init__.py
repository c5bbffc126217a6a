"""Predicting with a trained run, or a model exported from one: images and captions in, probabilities out.

:func:`load` (a run folder or an exported folder) returns a :class:`Predictor`; ``python -m nbhelpers.predict``
does the same from the command line, and :mod:`nbhelpers.predict.export` writes a self-contained folder.
"""

from nbhelpers.predict.predictor import Predictions, Predictor, load, read_image

__all__ = ["Predictions", "Predictor", "load", "read_image"]
