"""Merging only: tree walk, text, structured, SQL replay and the plugin
registry.  No containers, no state database; usable on its own.
"""
