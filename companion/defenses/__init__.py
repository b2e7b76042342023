"""Input-transformation defenses: a transform T applied before the classifier, f(T(x))."""
from .defense_gan import (GANProjection, Projection, detection_auc, detection_scores, encoder_start, inverter_losses,
                          latent_recovery_error, project, train_inverter)
from .pixel_deflection import PixelDeflection, class_activation_maps, deflect, robust_activation_map
from .semantic_quantization import (SemanticQuantization, aug_roi_map, jpeg, map_correlation, mass_ratio,
                                    random_block_map, rescale_to_rmse)
from .transforms import (Preprocessed, gaussian_noise, majority_vote, median_filter, pixel_dropout, quantize,
                         random_resize_pad, tv_denoise)
from .wavelet import haar_denoise, wavelet_denoise

__all__ = ["GANProjection", "Projection", "detection_auc", "detection_scores", "encoder_start", "inverter_losses",
           "latent_recovery_error", "project", "train_inverter",
           "PixelDeflection", "Preprocessed", "class_activation_maps", "deflect", "gaussian_noise", "majority_vote",
           "pixel_dropout", "quantize", "robust_activation_map", "wavelet_denoise", "haar_denoise", "median_filter",
           "random_resize_pad", "tv_denoise",
           "SemanticQuantization", "aug_roi_map", "jpeg", "map_correlation", "mass_ratio", "random_block_map",
           "rescale_to_rmse"]
