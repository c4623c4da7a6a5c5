"""Attacks by kind: white_box/, transfer/, query/, hybrid/, extraction/, each with its base module; adapters/
holds ART and foolbox over the attacker's handles; base.py the contract (Attack, AttackerKit, AttackResult)."""
