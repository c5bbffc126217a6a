"""memelab's helper package: data, models, losses, training and evaluation for the notebooks."""

__version__ = "0.1.0"
