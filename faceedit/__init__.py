"""faceedit: edit faces with attribute vectors in a VAE's latent space, and audit the edits."""

from faceedit.attributes import ATTRIBUTES, attribute_index

__all__ = ["ATTRIBUTES", "attribute_index"]
__version__ = "0.1.0"
