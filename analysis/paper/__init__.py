"""Reference tables (the paper's, or a user's) and the paper's table beside our results."""
