"""Demo and benchmark helpers, kept apart from the DeFeat library itself.

Nothing here is needed to distil on your own data:

- ``defeat.demo.data``: the embedded synthetic dataset (generator + registration);
  ``python -m defeat.demo.data`` writes it.
- ``defeat.modeling.backbones``: slim ResNet-FPN backbones sized for CPU demos (registered in
  Detectron2's ``BACKBONE_REGISTRY`` when ``defeat`` is imported, so configs can name them).
- ``defeat.demo.experiments``: runs ``train_net.py`` jobs side by side and reads their metrics
  (shared by the demo and ``benchmarks/accuracy.py``).
- ``defeat.demo.progress``: progress lines (iteration, ETA) of runs side by side (the demo and
  ``benchmarks/accuracy.py``).
- ``defeat.demo.runner``: ``python -m defeat.demo`` (``make demo``).
"""
