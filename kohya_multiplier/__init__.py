"""Fractional per-subset multipliers for kohya-ss/sd-scripts.

The product is a pipeline of stages; each package is one, and imports point down the list only
(``scripts/import-graph.py`` checks it; ``docs/architecture.md`` says where each decision is made):

- foundation: ``errors`` (the one-line error, warnings), ``rng`` (generators seeded from explicit
  tuples), ``progress``, ``run_arithmetic`` (sd-scripts' step arithmetic);
- ``dataset``: read and resolve: the config, folders and metadata become the resolved dataset
  (``dataset.types``), every subset's images, rate, exclusion and loss weight decided once;
- ``planner``: the plan input of a resolved dataset and the planner: the batches of every epoch;
- ``report``: statistics, the text table, the page and the picture, schedule files, schedule-diff;
- ``balance``: targets to multipliers, and the edits to the user's TOML;
- ``writer`` (every file the tool writes), ``example``, ``bench``;
- ``checkouts``: sd-scripts checkouts (locate, revision fingerprint, patch, the training scripts);
- ``sdscripts``: the runtime hooks into sd-scripts (the only part that imports sd-scripts or torch);
- ``commands`` and ``cli``: the command line, inside one error boundary.
"""

__version__ = "0.1.0"
