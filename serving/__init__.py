"""The BentoML recommender service (service.py), its micro-batcher, fast lane and diversity monitor."""
