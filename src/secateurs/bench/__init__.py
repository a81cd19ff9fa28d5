"""`secateurs bench`: compare methods on quality and cost, with confidence intervals, plots and a report."""

from .report import summarize, write_report
from .run import run_bench
from .spec import BenchSpec, Cell, cells_from_yaml, parse_method_spec

__all__ = ["BenchSpec", "Cell", "cells_from_yaml", "parse_method_spec", "run_bench", "summarize", "write_report"]
