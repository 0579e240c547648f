"""Measurements of a model's cost, into plain dataclasses."""


from distill.bench.measure import ModelCost, count_flops, measure_callable, measure_model

__all__ = ["ModelCost", "count_flops", "measure_callable", "measure_model"]
