"""The YAML study spec: its loader, its models (one per block), and the grid it plans."""
