"""Data in: dataset contracts, validation, admission of landing files, and the lake they land in."""
