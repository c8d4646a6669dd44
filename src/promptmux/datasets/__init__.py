"""Real data sets that ship inside PyPI packages, exposed as `data.callable` functions."""
