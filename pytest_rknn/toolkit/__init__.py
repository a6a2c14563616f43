"""The host/worker seam: ``remote.py`` runs inside a toolkit environment and imports almost
nothing; ``protocol`` (the messages and their checks) and ``supervisor`` (spawning, limits,
replacement) are the host's side of it."""
