"""``python -m nbhelpers.export RUN_DIR OUT_DIR``: see :mod:`nbhelpers.predict.export`."""
