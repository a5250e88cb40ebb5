"""Training runs with PyTorch Lightning (the models never import it): ``run`` (train, evaluate),
``compare`` (models x seeds), ``explain`` (a trained classifier's decisions), ``callbacks``,
``lit``. Nothing is imported here, so that a command loads only what it uses.
"""
