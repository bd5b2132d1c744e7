"""Helpers and fixtures the tests share: the warm cluster, the in-process CLI, test servers and fabricated studies."""
