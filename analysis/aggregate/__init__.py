"""Aggregates over the results table: seed statistics, paired tests, Pareto fronts and learning curves."""
