"""Balance: multipliers that meet per-subset targets (``solve``), written into the user's TOML with
comments and layout kept (``toml_edit``)."""
