"""Tests of analysis.aggregate."""
