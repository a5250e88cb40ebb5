"""Developer tools that run on the sources (``python -m enn.tools.imports``)."""
