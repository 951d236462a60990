"""Demo and benchmark helpers, kept apart from the DeFeat library itself.

Nothing here is needed to distil on your own data:

- ``defeat.demo.data``: the embedded synthetic dataset (generator + registration);
  ``python -m defeat.demo.data`` writes it.
- ``defeat.modeling.backbones``: slim ResNet-FPN backbones sized for CPU demos (registered in
  Detectron2's ``BACKBONE_REGISTRY`` when ``defeat`` is imported, so configs can name them).
- ``defeat.demo.experiments``: runs ``train_net.py`` jobs side by side and reads their metrics
  (shared by ``python -m defeat run`` and ``benchmarks/accuracy.py``).
- ``defeat.demo.progress``: progress lines (iteration, ETA) of runs side by side (the same two).
- ``defeat.demo.pipeline``: ``python -m defeat run``, one's own data to a distilled, exported student.
- ``defeat.demo.runner``: ``python -m defeat demo`` = ``python -m defeat.demo`` (``make demo``):
  ``python -m defeat run`` with a demo preset on the embedded dataset.
"""
