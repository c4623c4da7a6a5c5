"""Transfer attacks: crafted on the attacker's surrogate, each result submitted once through the API."""
