"""Where yolo-etram meets the libraries it extends below their public API (:mod:`.ultralytics`: every private name
and every swap, in one table)."""
