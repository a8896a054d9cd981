"""EG3D/StyleGAN3-compatible ops: a pure-PyTorch reference for each, C++ plugins for CPU tensors, Triton for CUDA."""
