"""Embedding stores of trained heads: video vectors, vector indexes and text search."""
