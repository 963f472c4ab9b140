"""petite: parameter-efficient fine-tuning of 3D medical imaging networks."""
__version__ = "0.1.0"
