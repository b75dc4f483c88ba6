"""What every trainer adapter shares at run time (sd-scripts' and musubi-tuner's): the balance
table printed at start and the recorder of trained batches. Imports neither trainer."""
