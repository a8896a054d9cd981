"""EG3D-compatible torch utilities: persistence, misc helpers, training stats, custom ops."""
