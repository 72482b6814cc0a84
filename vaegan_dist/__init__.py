"""vaegan-dist: distributed training of VAE + BEGAN* + LSM (Khan, Hayat, Barnes, WACV 2018)."""

__version__ = "0.1.0"
