"""distill's version: one place, which every room that prints or records it reads (pyproject.toml says the same;
``tests/test_shipping.py`` holds them together)."""

__version__ = "0.1.0"
