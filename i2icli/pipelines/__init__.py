"""Restore pipelines: the stages a photo goes through (background upscaling, face restoration, ...)."""
