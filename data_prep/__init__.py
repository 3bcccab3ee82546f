"""COCO (or synthetic COCO-format) annotations and images -> person crops in NumPy shards."""
