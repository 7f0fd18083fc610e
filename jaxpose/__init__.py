"""jaxpose: JAX/Flax reimplementations of classic human pose estimation systems."""

__version__ = "0.1.0"
