"""Tests of analysis.table."""
