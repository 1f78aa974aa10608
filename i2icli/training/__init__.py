"""Training infrastructure shared by the methods i2i trains itself: image folders and a resumable loop.

``data`` turns a folder of images into tensors (``paired_data`` pairs label maps with their photos);
``loop`` runs any :class:`~i2icli.training.loop.TrainableMethod` with checkpoints (``checkpoints``), a
metrics log (``metrics_log``) and sample grids. Method-specific networks and losses live in their own modules.
"""
