"""Unified diffs that hook kohya-multiplier into sd-scripts checkouts (installed as package data
``kohya_multiplier.patches``; applied by ``kohya-multiplier patch DIR``)."""
