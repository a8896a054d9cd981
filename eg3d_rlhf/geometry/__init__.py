"""Geometry of sigma: grids (cube, slab), normalisation, meshes and shaded previews."""
