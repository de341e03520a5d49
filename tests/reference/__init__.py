"""Independent float64 NumPy references for the optimizers in `adaptive_tx`."""
