"""Single-image analysis-by-synthesis fitting: `fit(image, model) -> FitResult`."""
from .pipeline import FitResult, fit

__all__ = ["fit", "FitResult"]
