"""Read and resolve: the first stage.

A dataset config (or DreamBooth folders, or fine-tuning metadata) becomes plain data types
(``types``) resolved once by the reader (``config``): every subset's images with their sizes
(``images``, ``subset_images``, ``finetune_metadata``, ``reading``), its rate and where it came from
(``multipliers``), whether it is excluded, its loss weight (``loss_weights``), the stock
regularization rule (``regularization``), the bucket rules (``buckets``), the bounds on every number
(``limits``), the notes on what sd-scripts ignores (``ignored``), sd-scripts' training config files
(``training_config``) and the full decode of every image (``image_check``). Nothing here imports
the planner, the reports, the adapters or the commands.
"""
