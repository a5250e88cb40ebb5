"""Seeing the ENN's memory and reading run folders (docs/analysis.md); no Lightning.

``metrics`` (memory statistics, slot attribution, ablation), ``memory`` (a run's ``memory/``
files), ``stats`` and ``summary`` (a comparison over seeds), ``plots``, ``report``. Nothing is
imported here: matplotlib and SciPy load only with the modules that use them.
"""
