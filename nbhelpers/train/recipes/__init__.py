"""Training recipes, one module each; every recipe's ``run(config)`` is what its notebook calls.

``python -m nbhelpers.train RECIPE key=value ...`` (or ``accelerate launch -m nbhelpers.train ...``)
runs the same function from the command line.
"""
