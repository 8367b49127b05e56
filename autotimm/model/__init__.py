"""The model: `ImageClassifier` and what it is built from (backbone, head, regularization,
recipes, EMA, staged unfreezing, multi-label, confusion matrix, the trained model's cost).

A library layer: imports metrics, optim, data, training, records and the top-level helpers,
never app, sweep, compare or inference. Nothing is imported here (`import autotimm` stays
light); `from autotimm import ImageClassifier` is the public path.
"""
