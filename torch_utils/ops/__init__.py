"""EG3D/StyleGAN3-compatible ops: a pure-PyTorch reference for each, an optional compiled plugin for CUDA tensors."""
