"""Tests of the study service (study/), one file per part; the shared helpers are in tests/support/."""
