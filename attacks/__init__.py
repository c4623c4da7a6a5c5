"""Attacks: one module per attack, each adapting an ART or foolbox implementation; base.py holds the contract."""
