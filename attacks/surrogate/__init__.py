"""The attacker's surrogate (`surrogate=`), one module each, built by `_target_`: one model or an ensemble, and what
the attacker knows to train it on."""
