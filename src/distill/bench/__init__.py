"""Measurements of a model's cost, into plain dataclasses."""


from distill.bench.measure import ModelCost, count_flops, measure_callable, measure_model

__all__ = ["ModelCost", "count_flops", "measure_callable", "measure_model"]

from distill.core.callable_module import callable_package  # noqa: E402

callable_package(__name__, "bench")  # distill.bench(...) stays the API function, and this package is callable
