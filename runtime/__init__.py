"""The container runtime core: images, layer store, overlay mounts, OCI runtime
spec, executors, lifecycle, health checks and networking.

runtime imports nothing from ``volmerge`` or ``strategies``.
"""
