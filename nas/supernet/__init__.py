"""Weight sharing: one supernet over a MnasNet space that scores any member in seconds.

* :class:`Supernet` (``_net``): every member of the space as a path through one set
  of weights; :meth:`Supernet.extract` hands a member its weights as a plain state
  dict for :func:`nas.build_model`.
* :func:`train_supernet` (``_train``): the sandwich rule with in-place distillation,
  checkpointed and resumable.
* :class:`SupernetEstimator` (``_score``): inherited weights, BN recalibrated on a
  fixed set of training images, held-out accuracy; cached per spec.
* ``DIR/supernet.pt`` (``_checkpoint``): the versioned checkpoint format.
"""
from ._checkpoint import CHECKPOINT, FORMAT, VERSION, load_supernet, read_checkpoint
from ._net import Member, Supernet, SupernetError, fit_tensor
from ._score import (DEFAULT_CALIBRATION_IMAGES, SupernetEstimator, calibration_batches, inherit, save_extracted,
                     score_report)
from ._train import OPTIMIZERS, SEARCH_SUPERNET, TrainConfig, peak_rss_mb, resolve_device, train_supernet

__all__ = ["Supernet", "Member", "SupernetError", "fit_tensor", "TrainConfig", "train_supernet", "OPTIMIZERS",
           "SEARCH_SUPERNET",
           "peak_rss_mb", "resolve_device", "SupernetEstimator", "DEFAULT_CALIBRATION_IMAGES", "calibration_batches",
           "inherit", "score_report", "save_extracted", "load_supernet", "read_checkpoint", "CHECKPOINT", "FORMAT", "VERSION"]
