"""Volume rendering of tri-plane features: ray sampling, importance sampling and MipNeRF-style compositing."""
