"""Output hiding: defenses the Oracle applies to every answer it returns (rounded, top-k, reverse sigmoid,
output noise, labels only). One module per defense; `base.py` holds what they share."""
