"""Losses shared by model families."""
