"""Everything that runs inside one trial: pure PyTorch, no Ray, no MLflow.

Importing the package registers the built-in adaptation methods (`trainables.methods`) in the
method registry (`trainables.registry`), which the trial contract validates method names against.
That import, the registry, the trial contract (`trainables.config`) and `trainables.files`' JSON helpers
need no torch: a study's driver plans with them and never imports torch (tests/study/test_light_driver.py).
"""

import trainables.methods  # noqa: F401 (registers the built-in methods)
