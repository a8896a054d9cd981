"""EG3D network architectures: StyleGAN2 backbone, super-resolution, discriminators and volumetric rendering."""
