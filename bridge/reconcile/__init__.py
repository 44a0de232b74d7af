"""Reconciliation: observed vs desired -> a plan of actions, guarded, then applied."""
