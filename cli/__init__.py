"""The ``recon`` command line: the outermost layer, over ``workers`` and ``app``."""
