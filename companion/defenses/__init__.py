"""Input-transformation defenses: a transform T applied before the classifier, f(T(x))."""
from .transforms import Preprocessed, gaussian_noise, quantize

__all__ = ["Preprocessed", "gaussian_noise", "quantize"]
