"""Modeling: features as pure polars functions, XGBoost fit and scoring, and the model registry."""
