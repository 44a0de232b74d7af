"""Importers turning directory exports into the pure model."""
