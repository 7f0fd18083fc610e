"""Training losses, one module per method (``integral``, ``hg3d``, ...)."""
