"""sd-scripts checkouts: finding one, telling its revision, patching it, and the training scripts it
holds. Nothing here imports sd-scripts or torch; the runtime hooks are in :mod:`kohya_multiplier.sdscripts`."""
