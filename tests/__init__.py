"""jaxpose tests."""
