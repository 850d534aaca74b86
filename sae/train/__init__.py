"""SAE training: the single-process trainer and its data-parallel wrapper."""
