"""Integration layer: the only part of kohya-multiplier that imports sd-scripts or torch.

- ``locate``: find the checkout, its revision and interpreter (torch-free);
- ``compat``: environment work-arounds applied before sd-scripts is imported;
- ``launch``: ``run_training``, the wrapper behind ``kohya-multiplier train_network`` etc.;
- the dataset/config patches are imported by ``launch`` only after sd-scripts is on ``sys.path``.
"""
