"""The dielectric surrogate: an e3nn network for the total dielectric constant of a crystal,
trained on the Materials Project DFPT set (data, model, train, predict)."""

from crysvcd.dielectric.predict import dielectric_labels, predict_dielectric, predict_log_dielectric

__all__ = ["dielectric_labels", "predict_dielectric", "predict_log_dielectric"]
