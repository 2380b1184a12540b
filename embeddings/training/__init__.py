"""Training of CLIP-style models on catalog manifests (plain Python, no Django)."""
