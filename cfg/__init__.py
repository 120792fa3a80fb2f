"""Model and data YAMLs, installed as ``yolo_etram.cfg`` so bare names resolve from any working directory."""
