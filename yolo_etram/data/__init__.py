"""Event data: raw readers, the stacked histogram, RVT label preprocessing, ``prepare``, synthetic recordings.

Nothing here imports torch or Ultralytics at module level, so ``etram-yolo prepare`` and ``synth`` start fast.
"""
