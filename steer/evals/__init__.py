"""How good an SAE is: reconstruction and downstream-loss evaluation (the paper's suite grows here)."""
