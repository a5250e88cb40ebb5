"""Seeing the ENN's memory and explaining its decisions (docs/analysis.md).

``metrics`` (statistics, attribution, ablation), ``monitor`` (the training callback),
``plots``, ``explain``, ``report``, ``cli``. Nothing is imported here, so that
``enn.train`` can import ``monitor`` and ``report`` without an import cycle.
"""
