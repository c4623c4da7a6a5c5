"""Poisoning by data contributors (`poison=`), one module each, built by `_target_`: what the attacker's contributors
put in the judge's training pool, and the trigger it applies at test time (`attack=backdoor`)."""
