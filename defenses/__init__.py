"""Defenses: base.py holds the contract, one module per defense."""
