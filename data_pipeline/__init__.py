"""Mesh ingest, normalisation, voxelisation, part annotation, records and dataset recipes."""
