"""Proof obligations over the models and the implementation's rules, and their runner.

Installed as ``kprobe_ref.proofs``; ``kprobe-ref prove`` runs every obligation.
"""
