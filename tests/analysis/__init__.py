"""Tests of the analysis package, one folder per subpackage."""
