"""One inference pipeline per command, each loaded once and called per image:

* ``restore.RestorePipeline`` (``i2i restore``): GFPGAN faces + Real-ESRGAN background;
* ``exemplar.ExemplarPipeline`` (``i2i exemplar``): CoCosNet v2, a pose or map + an exemplar photo;
* ``invert.InvertPipeline`` (``i2i invert``): Multiple GAN Inversion through a StyleGAN2;
* ``translate_lr.LRTranslator`` (``i2i translate-lr``): a photo fitted to a tiny target;
* ``paired.PairedTranslator`` (``i2i paired``): GRIT, a label map or edges to photos.

Scripts import them from ``i2icli`` (see its ``__all__``); the other modules here are internal.
"""
