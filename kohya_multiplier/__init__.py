"""Fractional per-subset multipliers for kohya-ss/sd-scripts.

Layers, with imports pointing one way (core <- adapter <- CLI):
- core (torch-free): ``errors``, ``rng``, ``multipliers``, ``config``, ``images``, ``buckets``, ``planner``,
  ``report``, ``schedule``;
- adapter: ``kohya_multiplier.sdscripts`` (imported only together with sd-scripts);
- CLI: ``kohya_multiplier.cli``.
"""

__version__ = "0.1.0"
