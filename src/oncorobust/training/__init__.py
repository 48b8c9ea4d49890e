"""Training stage: the training loop and the training regimes (clean and adversarial)."""
