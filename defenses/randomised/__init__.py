"""Randomised answers: noise on each query's input (the judge itself answers at random)."""
