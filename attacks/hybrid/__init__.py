"""Hybrid attackers: transfer first, then a query attack from the transfer example."""
