"""The generator interface the preference core sees, and its adapters: EG3D, and multi-stage flow pipelines."""
