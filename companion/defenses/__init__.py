"""Input-transformation defenses: a transform T applied before the classifier, f(T(x))."""
from .pixel_deflection import PixelDeflection, class_activation_maps, deflect, robust_activation_map
from .transforms import Preprocessed, gaussian_noise, majority_vote, quantize
from .wavelet import wavelet_denoise

__all__ = ["PixelDeflection", "Preprocessed", "class_activation_maps", "deflect", "gaussian_noise", "majority_vote",
           "quantize", "robust_activation_map", "wavelet_denoise"]
