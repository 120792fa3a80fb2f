"""Helpers shared by every layer: user errors, offline defaults, our YAMLs by name, atomic writes, JSON conversion,
input sizes, CPU threads and the one place that patches Ultralytics for a while.

Nothing here imports another part of yolo_etram (except :mod:`.errors`), and importing this package imports nothing
heavy: each module loads what it needs.
"""
