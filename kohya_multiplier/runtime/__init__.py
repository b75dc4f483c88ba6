"""What every trainer adapter shares at run time (sd-scripts' and musubi-tuner's): the recorder of
trained batches. Imports neither trainer."""
