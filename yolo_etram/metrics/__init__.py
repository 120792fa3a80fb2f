"""Prophesee/COCO evaluation of event-camera detections."""
