"""Report: what a plan or a recorded run gives each subset.

Statistics and the text table (``stats``), their data for pages and pictures (``data``, ``sources``),
the page (``page``, ``svg_chart``), the picture (``picture``), distortion warnings (``distortion``),
schedule files as written and read (``schedule``) and their comparison (``schedule_diff``).
"""
