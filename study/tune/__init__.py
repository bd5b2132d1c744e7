"""A study on Ray Tune: the run itself, the trainable, its callbacks, schedulers and the Optuna search."""
