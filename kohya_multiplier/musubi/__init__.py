"""The musubi-tuner adapter: runs musubi-tuner's own training scripts with planned datasets. The
only modules that import musubi-tuner; nothing here imports the sd-scripts adapter."""
