"""Synthetic drawings: digits and non-digits drawn with a virtual pen like the app's canvas.

Used by training and evaluation only; serving code never imports this package.
Data flow: `shapes` (stroke primitives) -> `glyphs` (digit styles, letters, symbols) and `trace`
(MNIST scans -> pen strokes) -> `render` (the pen, colours) -> `datasets` / `negatives` /
`detector_sets` (seeded sets of drawings).
"""
