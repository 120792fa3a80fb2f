"""The research protocol: ablation specs (variants x seeds), their runs, the statistics that judge a lever (means,
t intervals, paired differences against the baseline) and the ablation's record. It drives the roles through
``EventYOLO``; nothing below imports it.

Usage:
    $ etram-yolo ablate cfg/ablations/small_objects.yaml --out runs/ablate/small_objects
"""
