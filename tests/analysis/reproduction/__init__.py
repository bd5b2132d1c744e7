"""Tests of analysis.reproduction."""
