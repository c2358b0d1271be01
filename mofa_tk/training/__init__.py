"""Training the MoFA autoencoder: data sets (`data`), the CNN `Encoder`, the autoencoder `MoFA` and the loop
(`train`)."""
from .autoencoder import MoFA, load_encoder
from .encoder import Encoder
from .train import TrainConfig, train

__all__ = ["MoFA", "load_encoder", "Encoder", "TrainConfig", "train"]
