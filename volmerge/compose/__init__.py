"""Compose stacks: a compose.yaml run by volmerge (docs/compose.md).

``loader`` finds, reads, interpolates, validates and merges the files into a
``Project``; ``convert`` maps a service to ``RunOptions``; ``stack`` runs a
project's containers, networks and volumes.  Nothing here is imported by
``volmerge run``.
"""
