"""bgmrec: background music recommendation for short videos (CMVAE, VMCML)."""

__version__ = "0.1.0"
