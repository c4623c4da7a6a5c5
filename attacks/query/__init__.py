"""Query attacks: score-based and decision-based, through the Oracle under a per-example budget."""
