"""Tests of analysis.per_mode."""
