"""Helpers shared by every layer: user errors, offline defaults, our YAMLs by name, atomic writes, JSON conversion,
input sizes, CPU threads (what touches Ultralytics' internals is in :mod:`yolo_etram.integrations`).

Nothing here imports another part of yolo_etram (except :mod:`.errors`), and importing this package imports nothing
heavy: each module loads what it needs.
"""
