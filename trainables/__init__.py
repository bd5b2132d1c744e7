"""Everything that runs inside one trial: pure PyTorch, no Ray, no MLflow.

Importing the package registers the built-in adaptation methods (`trainables.methods`) in the
method registry (`trainables.registry`), which the trial contract validates method names against.
"""

import trainables.methods  # noqa: F401 (registers the built-in methods)
