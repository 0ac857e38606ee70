"""Rules and what they decide: the rules file, conditions, approval plans, verdicts."""
