"""Semantic inputs for the exemplar models: label maps rendered from poses and other annotations."""
