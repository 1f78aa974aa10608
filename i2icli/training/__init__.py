"""Training infrastructure shared by the methods i2i trains itself: image folders and a resumable loop.

``files`` finds a folder's images, and pairs label maps with their photos, without PyTorch; ``data``
turns them into tensors (``paired_data``, pairs of them);
``loop`` runs any :class:`~i2icli.training.loop.TrainableMethod` with checkpoints (``checkpoints``), a
metrics log (``metrics_log``) and sample grids. Method-specific networks and losses live in their own modules.
"""
