"""Launchers: accelerate configs, submitit (vaegan-submit)."""
